"""Page pools and bookkeeping of the paged KV cache, shared by the gather and FlashInfer paths.

Per global layer one physical pool ``[num_pages, 2 (K, V), page_size, H, D]`` (NHD, the layout
FlashInfer reads) holds two streams, each a densely packed slot space (``FrameSlots``):

* the **patch stream**, pages ``[0, patch_pages)``: one unit of ``patches_per_frame`` tokens per
  retained frame. The first ``scale_frames`` frames are never evicted; the others form a FIFO
  of at most ``sliding_window`` frames (lingbot-map's sliding window). With the default page
  size (= patches per frame) one unit is exactly one page, as in the reference.
* the **special stream**, pages ``[patch_pages, num_pages)``: the ``num_special_tokens``
  specials (camera, registers, scale) of every retained frame, packed contiguously (a frame may
  straddle two pages).

Because both streams are dense, the visible pages are ``patch pages -> special pages`` and only
the last page of each stream can be partial: ``segments()`` is all a FlashInfer page table needs.
The gather path reads the same slots in the canonical order of ``cache/base.py`` instead.

**Endless streams.** The reference sizes its special pool for ``max_frame_num + 100`` frames and
fails beyond. Here ``max_frames > 0`` bounds the frames whose specials are kept: when more than
``max_frames`` frames hold specials, the specials of the oldest non-scale frame are dropped (and
its patches too if it is still in the window, which only happens when ``max_frames`` is smaller
than ``scale_frames + sliding_window``). The hole it leaves is filled by the newest frame's
specials, so the special stream is a ring over a fixed number of slots: both pools are
allocated once and the memory is constant forever (``stats``: ``specials_dropped``). With
``max_frames == 0`` specials are kept forever and the special pool doubles when full. The
temporal RoPE index is not the store's business: it keeps counting (``frames_stored``).

Deferred frames (flow keyframes) and non-keyframes are appended without eviction and removed
again by ``remove``; they always hold the last slot of both streams, so removal needs no move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gct_stream_ros.cache.frame_slots import FrameSlots, SlotMove, evict_streams
from gct_stream_ros.cache.sizes import CacheSizes, KVStorage, check_head_shape


@dataclass(frozen=True)
class Segment:
    """A stream as the kernel sees it: ``num_tokens`` tokens from page ``first_page`` on."""

    first_page: int
    num_tokens: int


class _Stream:
    """One stream's slots and where its tokens live in the pool's flat token space."""

    def __init__(self, slots: FrameSlots, unit: int, first_page: int, page_size: int):
        self.slots = slots
        self.unit = unit
        self.first_page = first_page
        self.page_size = page_size

    @property
    def num_tokens(self) -> int:
        return len(self.slots) * self.unit

    def token_index(self, slots: list[int]) -> torch.Tensor:
        """Flat pool token ids of the given slots' units, in the given order: ``[len(slots) * unit]``."""
        slot_ids = torch.tensor(slots, dtype=torch.long).unsqueeze(1)  # [n, 1]
        within = torch.arange(self.unit, dtype=torch.long).unsqueeze(0)  # [1, unit]
        return (self.first_page * self.page_size + slot_ids * self.unit + within).flatten()


class PagedKVStore(KVStorage):
    """Two-stream paged K/V storage for all global layers (see the module docstring)."""

    def __init__(self, num_layers: int, num_heads: int, head_dim: int, patches_per_frame: int,
                 num_special_tokens: int = 6, scale_frames: int = 8, sliding_window: int = 64,
                 max_frames: int = 0, page_size: int | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.sizes = CacheSizes(num_layers, num_special_tokens, scale_frames, sliding_window, max_frames)
        check_head_shape(num_heads, head_dim)
        if patches_per_frame < 1:
            raise ValueError(f"patches_per_frame must be >= 1, not {patches_per_frame}")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.patches_per_frame = patches_per_frame
        self.page_size = page_size or patches_per_frame
        if self.page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.device = torch.device(device)
        self.dtype = dtype
        # one unit more than the steady state: a deferred or skipped frame is held un-evicted
        self._patch_units = scale_frames + sliding_window + 1
        special_units = max_frames + 1 if max_frames else self._patch_units
        self.patch_pages = math.ceil(self._patch_units * patches_per_frame / self.page_size)
        self._special_pages = math.ceil(special_units * num_special_tokens / self.page_size)
        self.patches = _Stream(FrameSlots(scale_frames, sliding_window), patches_per_frame, 0, self.page_size)
        self.specials = _Stream(FrameSlots(scale_frames, max_frames - scale_frames if max_frames else None),
                                num_special_tokens, self.patch_pages, self.page_size)
        self.pools = [self._zeros(self.num_pages) for _ in range(num_layers)]
        self.reset()

    @property
    def num_pages(self) -> int:
        return self.patch_pages + self._special_pages

    def reset(self) -> None:
        self.patches.slots.reset()
        self.specials.slots.reset()
        self.frames_evicted = 0
        self.specials_dropped = 0
        self._unwritten: set[int] = set()
        self._changed()

    # -- bookkeeping -------------------------------------------------------------------------

    def append(self, frame: int) -> None:
        """Reserve slots for ``frame`` in both streams; its K/V come with ``write``."""
        if len(self.patches.slots) >= self._patch_units:
            raise RuntimeError("patch pool exhausted: evict or remove frames before appending more")
        if (len(self.specials.slots) + 1) * self.num_special_tokens > self._special_pages * self.page_size:
            self._grow_special_pool()
        self.patches.slots.append(frame)
        self.specials.slots.append(frame)
        self._unwritten.add(frame)
        self._changed()

    def evict(self) -> None:
        """Apply the sliding window, then the ``max_frames`` bound (which drops frames whole)."""
        streams = {id(stream.slots): stream for stream in (self.patches, self.specials)}
        evicted, dropped = evict_streams(self.patches.slots, self.specials.slots,
                                         lambda slots, frame: self._discard(streams[id(slots)], frame))
        self.frames_evicted += evicted
        self.specials_dropped += dropped
        self._changed()

    def remove(self, frame: int) -> None:
        """Forget the last appended ``frame`` (a rolled-back or skipped frame) in both streams."""
        self.patches.slots.pop_last(frame)
        self.specials.slots.pop_last(frame)
        self._unwritten.discard(frame)
        self._changed()

    def end_writes(self) -> None:
        """Every layer has written the step's frames: later moves must carry their data."""
        self._unwritten.clear()

    # -- data --------------------------------------------------------------------------------

    def write(self, layer: int, frames: list[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Store ``frames``' K/V ``[S, P, H, D]`` (specials first in each frame) in ``layer``'s pool."""
        specials = self.num_special_tokens
        streams_parts = (slice(specials, None), slice(0, specials))  # patch tokens, special tokens
        for parts, (held, rows) in zip(streams_parts, self._write_targets(frames)):
            if not held:
                continue
            chosen = slice(None) if len(held) == len(frames) else held  # a slice avoids an index upload
            kv = torch.cat((k[chosen, parts].flatten(0, 1), v[chosen, parts].flatten(0, 1)))  # [2n, H, D]
            self._rows(layer).index_copy_(0, rows, kv.to(self.dtype))

    def _write_targets(self, frames: list[int]) -> list[tuple[list[int], torch.Tensor]]:
        """Per stream: the step frames it holds and their K then V pool rows (cached for all layers)."""
        if self._writes is None or self._writes[0] != frames:
            targets = []
            for stream in (self.patches, self.specials):
                held = [i for i, frame in enumerate(frames) if frame in stream.slots]
                flat = stream.token_index([stream.slots.slot(frames[i]) for i in held]).to(self.device)
                targets.append((held, torch.cat(self._kv_rows(flat))))
            self._writes = (list(frames), targets)
        return self._writes[1]

    def visible_token_index(self) -> torch.Tensor:
        """Flat pool token ids of the visible keys in the canonical order, ``[N]`` (cached per step)."""
        if self._visible is None:
            self._visible = torch.cat([self.patches.token_index(self.patches.slots.ordered_slots()),
                                       self.specials.token_index(self.specials.slots.ordered_slots())]
                                      ).to(self.device)
        return self._visible

    def gather(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense keys and values ``[N, H, D]`` of the visible set of ``layer``, canonical order."""
        if self._visible_rows is None:
            self._visible_rows = self._kv_rows(self.visible_token_index())
        key_rows, value_rows = self._visible_rows
        rows = self._rows(layer)
        return rows.index_select(0, key_rows), rows.index_select(0, value_rows)

    def segments(self) -> list[Segment]:
        """The patch stream, then the special stream, as contiguous page runs."""
        return [Segment(stream.first_page, stream.num_tokens) for stream in (self.patches, self.specials)]

    # -- sizes -------------------------------------------------------------------------------

    @property
    def tokens(self) -> int:
        """Cached tokens per layer."""
        return self.patches.num_tokens + self.specials.num_tokens

    @property
    def pages_in_use(self) -> int:
        return sum(math.ceil(segment.num_tokens / self.page_size) for segment in self.segments())

    @property
    def protected_tokens(self) -> int:
        return self.patches.slots.num_protected * self.patches_per_frame + self.specials.num_tokens

    def held_tensors(self) -> list[torch.Tensor]:
        return self.pools

    # -- internals ---------------------------------------------------------------------------

    def _changed(self) -> None:
        """Forget the per-step index caches: the bookkeeping changed."""
        self._visible: torch.Tensor | None = None  # [N] flat token ids, canonical order
        self._visible_rows: tuple[torch.Tensor, torch.Tensor] | None = None  # their K and V pool rows
        self._writes: tuple[list[int], list] | None = None  # (step frames, per-stream write targets)

    def _discard(self, stream: _Stream, frame: int) -> None:
        move = stream.slots.discard(frame)
        if move is not None and move.frame not in self._unwritten:
            self._copy(stream, move)

    def _copy(self, stream: _Stream, move: SlotMove) -> None:
        """Carry a frame's tokens from its old slot into the hole, in every layer."""
        source, target = (torch.cat(self._kv_rows(stream.token_index([slot]).to(self.device)))
                          for slot in (move.source, move.target))
        for layer in range(self.num_layers):
            rows = self._rows(layer)
            rows.index_copy_(0, target, rows.index_select(0, source))

    def _rows(self, layer: int) -> torch.Tensor:
        """``layer``'s pool as rows of ``[H, D]``: row ``(page * 2 + kv) * page_size + offset``."""
        return self.pools[layer].view(-1, self.num_heads, self.head_dim)

    def _kv_rows(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The K rows and the V rows of flat token ids ``[n]`` (one index op per read or write)."""
        pages, offsets = flat // self.page_size, flat % self.page_size
        return pages * 2 * self.page_size + offsets, (pages * 2 + 1) * self.page_size + offsets

    def _grow_special_pool(self) -> None:
        """Double the special pages (unbounded ``max_frames`` only); page ids stay valid."""
        extra = max(self._special_pages, 1)
        self.pools = [torch.cat([pool, self._zeros(extra)]) for pool in self.pools]
        self._special_pages += extra

    def _zeros(self, pages: int) -> torch.Tensor:
        return torch.zeros(pages, 2, self.page_size, self.num_heads, self.head_dim,
                           dtype=self.dtype, device=self.device)
