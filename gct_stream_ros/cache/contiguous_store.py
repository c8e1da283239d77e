"""Contiguous K/V storage of the sliding-window cache: the visible keys are one token range.

Per global layer one tensor ``[2 (K, V), capacity, H, D]`` is allocated at the first step (and
only grows with ``max_frames == 0``), holding the two streams of ``paged_store.py``, each a
densely packed slot space (``FrameSlots``), placed back to back around a fixed token ``origin``:

    [ .. free .. | specials of slot n-1 .. slot 1 | slot 0 ]origin[ patches of slot 0 | slot 1 .. | free ]

* the **patch stream** grows upwards from ``origin``: ``patches_per_frame`` tokens per retained
  frame, the ``scale_frames`` first frames never evicted, at most ``sliding_window`` others
  (lingbot-map's window), one unit more for a deferred or skipped frame;
* the **special stream** grows downwards from ``origin``: ``num_special_tokens`` per retained
  frame, bounded by ``max_frames`` as in ``paged_store.py`` (a ring over a fixed slot count).

Both streams stay dense (a frame that leaves is replaced by the frame of the stream's last slot),
so the visible keys are always the one range ``visible_range()``: a dense attention kernel reads
them in place, no gather, no page table. Attention is unmasked and RoPE is baked into the keys,
so the physical order does not change the math, only the float summation order; the canonical
order of ``cache/base.py`` is kept in the bookkeeping (``canonical_index``) for the bit-exact
fp32 path. In the steady state a stored frame takes the slots of the frames it evicts, so the
patch stream's length, and the key count of a dense kernel over it, stop changing once the
window is full.
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.frame_slots import FrameSlots, SlotMove, evict_streams
from gct_stream_ros.cache.sizes import CacheSizes, KVStorage, check_head_shape

UNBOUNDED_SPECIAL_UNITS = 128
"""Frames whose specials an unbounded (``max_frames == 0``) store first holds, doubled as needed."""


class ContiguousKVStore(KVStorage):
    """Two-stream contiguous K/V storage for all global layers (see the module docstring)."""

    def __init__(self, num_layers: int, num_heads: int, head_dim: int, patches_per_frame: int,
                 num_special_tokens: int = 6, scale_frames: int = 8, sliding_window: int = 64,
                 max_frames: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.sizes = CacheSizes(num_layers, num_special_tokens, scale_frames, sliding_window, max_frames)
        check_head_shape(num_heads, head_dim)
        if patches_per_frame < 1:
            raise ValueError(f"patches_per_frame must be >= 1, not {patches_per_frame}")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.patches_per_frame = patches_per_frame
        self.device = torch.device(device)
        self.dtype = dtype
        # one unit more than the steady state: a deferred or skipped frame is held un-evicted
        self.patch_units = scale_frames + sliding_window + 1
        self.patches = FrameSlots(scale_frames, sliding_window)
        self.specials = FrameSlots(scale_frames, max_frames - scale_frames if max_frames else None)
        self._special_units = max_frames + 1 if max_frames else UNBOUNDED_SPECIAL_UNITS
        self.kv = [self._empty() for _ in range(num_layers)]
        self.reset()

    def reset(self) -> None:
        self.patches.reset()
        self.specials.reset()
        self.frames_evicted = 0
        self.specials_dropped = 0
        self._unwritten: set[int] = set()
        self._writes: tuple[list[int], list[tuple[int, slice, slice]]] | None = None

    @property
    def origin(self) -> int:
        """Token where the special stream ends and the patch stream starts."""
        return self._special_units * self.num_special_tokens

    @property
    def capacity(self) -> int:
        return self.origin + self.patch_units * self.patches_per_frame

    # -- bookkeeping -------------------------------------------------------------------------

    def append(self, frame: int) -> None:
        """Reserve slots for ``frame`` in both streams; its K/V come with ``write``."""
        if len(self.patches) >= self.patch_units:
            raise RuntimeError("patch storage exhausted: evict or remove frames before appending more")
        if len(self.specials) >= self._special_units:
            self._grow_specials()
        self.patches.append(frame)
        self.specials.append(frame)
        self._unwritten.add(frame)
        self._writes = None

    def evict(self) -> None:
        """Apply the sliding window, then the ``max_frames`` bound (which drops frames whole)."""
        evicted, dropped = evict_streams(self.patches, self.specials, self._discard)
        self.frames_evicted += evicted
        self.specials_dropped += dropped
        self._writes = None

    def remove(self, frame: int) -> None:
        """Forget the last appended ``frame`` (a rolled-back or skipped frame) in both streams."""
        self.patches.pop_last(frame)
        self.specials.pop_last(frame)
        self._unwritten.discard(frame)
        self._writes = None

    def end_writes(self) -> None:
        """Every layer has written the step's frames: later moves must carry their data."""
        self._unwritten.clear()

    # -- data --------------------------------------------------------------------------------

    def write(self, layer: int, frames: list[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Store ``frames``' K/V ``[S, P, H, D]`` (specials first in each frame) in ``layer``'s storage."""
        kv = self.kv[layer]
        for index, target, part in self._write_targets(frames):
            kv[0, target] = k[index, part]
            kv[1, target] = v[index, part]

    def write_at(self, layer: int, tokens: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store one frame's K/V ``[P, H, D]`` at the storage ``tokens`` ``[P]`` (a device index: the
        same kernels serve every slot, see ``contiguous_cache.py``)."""
        kv = self.kv[layer]
        kv[0].index_copy_(0, tokens, k.to(self.dtype))
        kv[1].index_copy_(0, tokens, v.to(self.dtype))

    def unit_starts(self, frame: int) -> tuple[int, int]:
        """First storage token of ``frame``'s specials and of its patches (it must hold both)."""
        return (self._special_tokens(self.specials.slot(frame)).start,
                self._patch_tokens(self.patches.slot(frame)).start)

    def _write_targets(self, frames: list[int]) -> list[tuple[int, slice, slice]]:
        """(frame of the step, storage tokens, its tokens) per held stream unit (cached for all layers)."""
        if self._writes is None or self._writes[0] != frames:
            specials = self.num_special_tokens
            targets = []
            for index, frame in enumerate(frames):
                if frame in self.patches:
                    patches = self._patch_tokens(self.patches.slot(frame))
                    targets.append((index, patches, slice(specials, None)))
                if frame in self.specials:
                    special = self._special_tokens(self.specials.slot(frame))
                    targets.append((index, special, slice(0, specials)))
            self._writes = (list(frames), targets)
        return self._writes[1]

    def visible_range(self) -> tuple[int, int, int]:
        """``(start, split, stop)``: the visible tokens are ``[start, stop)``, specials before ``split``."""
        origin = self.origin
        return (origin - len(self.specials) * self.num_special_tokens, origin,
                origin + len(self.patches) * self.patches_per_frame)

    def visible(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[N, H, D]`` of the visible range of ``layer`` (views, storage order)."""
        start, _, stop = self.visible_range()
        kv = self.kv[layer]
        return kv[0, start:stop], kv[1, start:stop]

    def canonical_index(self) -> torch.Tensor:
        """Positions in ``visible(layer)`` of the canonical key order of ``cache/base.py``, ``[N]``."""
        start = self.visible_range()[0]
        units = [self._patch_tokens(slot) for slot in self.patches.ordered_slots()]
        units += [self._special_tokens(slot) for slot in self.specials.ordered_slots()]
        return torch.cat([torch.arange(unit.start - start, unit.stop - start) for unit in units])

    # -- sizes -------------------------------------------------------------------------------

    @property
    def patch_stream_full(self) -> bool:
        """The window is full: the patch stream's length only changes with deferred/skipped frames."""
        return len(self.patches) >= self.patch_units - 1

    @property
    def special_stream_full(self) -> bool:
        """``max_frames`` frames keep their specials: the special stream's length, as the full patch
        stream's, only changes with deferred/skipped frames (never, for an unbounded store)."""
        return self.max_frames > 0 and len(self.specials) >= self._special_units - 1

    @property
    def tokens(self) -> int:
        """Cached tokens per layer."""
        start, _, stop = self.visible_range()
        return stop - start

    @property
    def pages_in_use(self) -> int:
        return 0

    @property
    def protected_tokens(self) -> int:
        specials = len(self.specials) * self.num_special_tokens
        return self.patches.num_protected * self.patches_per_frame + specials

    def held_tensors(self) -> list[torch.Tensor]:
        return self.kv

    # -- internals ---------------------------------------------------------------------------

    def _patch_tokens(self, slot: int) -> slice:
        first = self.origin + slot * self.patches_per_frame
        return slice(first, first + self.patches_per_frame)

    def _special_tokens(self, slot: int) -> slice:
        last = self.origin - slot * self.num_special_tokens
        return slice(last - self.num_special_tokens, last)

    def _discard(self, slots: FrameSlots, frame: int) -> None:
        move = slots.discard(frame)
        if move is not None and move.frame not in self._unwritten:
            self._copy(slots, move)

    def _copy(self, slots: FrameSlots, move: SlotMove) -> None:
        """Carry a frame's tokens from its old slot into the hole, in every layer."""
        tokens = self._patch_tokens if slots is self.patches else self._special_tokens
        source, target = tokens(move.source), tokens(move.target)
        for kv in self.kv:
            kv[:, target] = kv[:, source]  # distinct slots never overlap

    def _grow_specials(self) -> None:
        """Double the special units (unbounded ``max_frames`` only), keeping every token's slot."""
        old_origin, used = self.origin, self.visible_range()
        self._special_units *= 2
        shift = self.origin - old_origin
        grown = []
        for kv in self.kv:
            new = self._empty()
            new[:, used[0] + shift:used[2] + shift] = kv[:, used[0]:used[2]]
            grown.append(new)
        self.kv = grown
        self._writes = None

    def _empty(self) -> torch.Tensor:
        return torch.empty(2, self.capacity, self.num_heads, self.head_dim, dtype=self.dtype,
                           device=self.device)
