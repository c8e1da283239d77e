"""One global layer's cached tokens in storage allocated once: append in place, evict by moving.

A budgeted layer keeps different tokens in every layer (and, with per-head selection, in every
head), so it cannot share the paged store's frame pages. Its tokens live in fixed pools sized at
start-up for the layer's largest budget plus one frame (``capacity``): keys and values
``[C, H, D]`` and, per slot and head, the token's frame, state, accumulated attention mass and
exposure. Slots ``[0, length)`` hold the cached tokens of every head (each head holds the same
count); attention reads that prefix as it is, since unmasked attention does not depend on the
order of its keys (spec kv-cache-policies §6.1: order only changes float rounding).

* ``append`` writes a step's tokens at ``length``; ``stage`` writes them there without keeping
  them (a SKIP step attends over the prefix plus its own tokens, nothing is stored).
* ``remove`` frees given slots (``[E, H]``, per head) and moves the surviving tokens of the tail
  ``[length - E, length)`` into the holes, so the prefix stays dense. Only ``E`` tokens move (one
  frame's worth in the steady state), never the whole layer.

Nothing in here reads the device: counts are known on the host, slots are device tensors. Only an
unbounded cache (``growable``: ``max_frames = 0``, specials without end) ever reallocates, doubling.

Device-addressed forms (``write_frame_at``, ``expire`` and ``remove`` given ``at``/``lengths``
tensors) serve the budgeted cache's fixed-shape steps (``budgeted_cache.py``): they read where
to write and how many slots are in use from device tensors and work over the whole capacity, so
one CUDA graph serves steps of any length; they leave the host ``length`` to the caller, which
sets it when the step begins. The storage starts zeroed so that slots past the length hold
finite values (a masked pass multiplies them by 0).

A pool may keep per-head sums of its evictable patches' keys (``track_candidates``, infinitevggt's fused
ranking, ``candidate_sums.py``): every change of them below the length tells the sums, before the cells
change. Expiring a frame changes none: its patches stay evictable (``evictable_patches``).

Slot states (``state``) decide what a policy may evict: ``PATCH`` (evictable), ``SCALE_PATCH`` and
``SPECIAL`` (protected: the scale frames' patches, every retained frame's special tokens), and
the ``EXPIRED_*`` tokens of a frame recycled by ``max_frames``, which the next eviction removes
first (``state_scores``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gct_stream_ros.cache.policies import fused_moves

if TYPE_CHECKING:  # the sums are handed in (``track_candidates``): no import at run time
    from gct_stream_ros.cache.policies.candidate_sums import CandidateSums

PATCH, SCALE_PATCH, SPECIAL, EXPIRED_PATCH, EXPIRED_SPECIAL = 0, 1, 2, 3, 4
FREE = 5
"""Not a stored state: what a fixed-shape pass sees past the length (``in_use``), never evicted."""


class TokenPool:
    """Fixed storage of one layer (see the module docstring)."""

    def __init__(self, capacity: int, num_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device,
                 growable: bool = False) -> None:
        self.growable = growable
        self.keys = torch.zeros(capacity, num_heads, head_dim, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.frames = torch.zeros(capacity, num_heads, dtype=torch.int32, device=device)
        self.state = torch.zeros(capacity, num_heads, dtype=torch.uint8, device=device)
        self.mass = torch.zeros(capacity, num_heads, dtype=torch.float32, device=device)
        self.exposure = torch.zeros_like(self.mass)
        # scratch of the fused removal (``fused_moves.remove``), where it runs: zero between removals
        # (each clears what it marks), so allocated zeroed, here and in ``_grow``
        self._marks = self.state.new_zeros(self.state.shape) if fused_moves.available(self.keys) else None
        self.slots = torch.arange(capacity, dtype=torch.int32, device=device).unsqueeze(1)  # [C, 1]
        self.length = 0
        self.candidates: CandidateSums | None = None

    def track_candidates(self, sums: CandidateSums) -> None:
        """Keep ``sums`` up to date with the candidates (``PATCH`` cells) below the length, from now on (an
        empty pool): every write kept, eviction, expiry and rollback tells them (``candidate_sums.py``)."""
        if self.length:
            raise RuntimeError("candidate sums start with an empty pool")
        sums.clear()
        self.candidates = sums

    @property
    def capacity(self) -> int:
        return self.keys.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of K/V storage allocated."""
        return 2 * self.keys.numel() * self.keys.element_size()

    @property
    def token_bytes(self) -> int:
        return 2 * self.keys[0].numel() * self.keys.element_size()

    def fields(self) -> tuple[torch.Tensor, ...]:
        """Every per-slot tensor (dim 0 = slot)."""
        return self.keys, self.values, self.frames, self.state, self.mass, self.exposure

    def append(self, keys: torch.Tensor, values: torch.Tensor, runs: list[tuple[int, int, int]]) -> None:
        """Keep ``keys``/``values`` ``[N, H, D]`` at the end; ``runs``: (count, frame, state) in order."""
        self.stage(keys, values, runs)
        self._keep(keys.shape[0])

    def append_frame(self, keys: torch.Tensor, values: torch.Tensor, frame: int, specials: int,
                     patch_state: int) -> None:
        """Keep one frame's tokens ``[P, H, D]``, its ``specials`` first (the model's order), as
        ``append`` of its patches (``patch_state``) then its specials (``SPECIAL``) would."""
        self.stage_frame(keys, values, frame, specials, patch_state)
        self._keep(keys.shape[0])

    def _keep(self, count: int) -> None:
        """The ``count`` slots staged at the length are kept."""
        if self.candidates is not None:
            self.candidates.kept(self, self.length, count)
        self.length += count

    def stage_frame(self, keys: torch.Tensor, values: torch.Tensor, frame: int, specials: int,
                    patch_state: int) -> None:
        """``append_frame`` without keeping the tokens (see ``stage``)."""
        if self._fused_writes(keys, values):
            self.reserve(self.length + keys.shape[0])
            fused_moves.write_run(self.fields(), keys, values, self.length, frame, patch_state, specials,
                                  SPECIAL)
            return
        patches = keys.shape[0] - specials
        self.stage(keys[specials:], values[specials:], [(patches, frame, patch_state)])
        self.stage(keys[:specials], values[:specials], [(specials, frame, SPECIAL)], offset=patches)

    def write_frame_at(self, keys: torch.Tensor, values: torch.Tensor, at: torch.Tensor, frame: torch.Tensor,
                       specials: int, patch_state: int, kept: bool) -> None:
        """``stage_frame`` at the slot ``at`` and with the ``frame`` index read from the device (0-d int
        tensors); ``kept``: the tokens are kept (a STORE step), not only attended. ``length`` is the
        caller's (see the module docstring)."""
        self._write_frame_at(keys, values, at, frame, specials, patch_state)
        if kept and self.candidates is not None:
            self.candidates.kept(self, at, keys.shape[0])

    def _write_frame_at(self, keys: torch.Tensor, values: torch.Tensor, at: torch.Tensor, frame: torch.Tensor,
                        specials: int, patch_state: int) -> None:
        if self._fused_writes(keys, values):
            fused_moves.write_run(self.fields(), keys, values, at, frame, patch_state, specials, SPECIAL)
            return
        count = keys.shape[0]
        token = torch.arange(count, device=keys.device)
        is_special = token < specials
        # the model's order (specials first) -> the pool's (patches first), as ``stage_frame``
        slots = at + torch.where(is_special, token + (count - specials), token - specials)
        self.keys.index_copy_(0, slots, keys.to(self.keys.dtype))
        self.values.index_copy_(0, slots, values.to(self.values.dtype))
        heads = self.frames.shape[1]
        self.frames.index_copy_(0, slots, frame.to(self.frames.dtype).expand(count, heads))
        states = torch.where(is_special, SPECIAL, patch_state).to(self.state.dtype)
        self.state.index_copy_(0, slots, states.unsqueeze(1).expand(count, heads))
        self.mass.index_fill_(0, slots, 0.0)
        self.exposure.index_fill_(0, slots, 0.0)

    def stage(self, keys: torch.Tensor, values: torch.Tensor, runs: list[tuple[int, int, int]],
              offset: int = 0) -> None:
        """Write tokens at ``length + offset`` without keeping them (see ``append``)."""
        start = self.length + offset
        end = start + keys.shape[0]
        self.reserve(end)
        if self._fused_writes(keys, values):
            cursor = start
            for count, frame, state in runs:
                span = slice(cursor - start, cursor - start + count)
                fused_moves.write_run(self.fields(), keys[span], values[span], cursor, frame, state)
                cursor += count
            return
        self.keys[start:end] = keys
        self.values[start:end] = values
        cursor = start
        for count, frame, state in runs:
            self.frames[cursor:cursor + count] = frame
            self.state[cursor:cursor + count] = state
            cursor += count
        self.mass[start:end] = 0.0
        self.exposure[start:end] = 0.0

    def _fused_writes(self, keys: torch.Tensor, values: torch.Tensor) -> bool:
        return fused_moves.available(self.keys) and keys.stride(-1) == values.stride(-1) == 1

    def reserve(self, end: int) -> None:
        """Make room for slots up to ``end`` (only a ``growable`` pool may grow)."""
        if end > self.capacity:
            if not self.growable:
                raise RuntimeError(f"{end} tokens exceed the layer's storage of {self.capacity}")
            self._grow(max(end, 2 * self.capacity))

    def expire(self, frame: int | torch.Tensor, length: torch.Tensor | None = None) -> None:
        """Mark every token of a recycled ``frame`` for removal by the next eviction; with ``length``
        (a 0-d device tensor, ``frame`` one too) over the slots below it (see the module docstring)."""
        in_use = self.length if length is None else length
        if fused_moves.available(self.keys):
            fused_moves.expire(self.frames, self.state, frame, in_use, SPECIAL, EXPIRED_PATCH,
                               EXPIRED_SPECIAL)
            return
        used = slice(0, self.length) if length is None else slice(None)
        mine = self.frames[used] == frame
        if length is not None:
            mine &= self.slots < length
        special = (self.state[used] == SPECIAL).to(torch.uint8)
        expired = EXPIRED_PATCH + special * (EXPIRED_SPECIAL - EXPIRED_PATCH)
        self.state[used] = torch.where(mine, expired, self.state[used])

    def in_use(self, length: torch.Tensor) -> torch.Tensor:
        """The states ``[C, H]`` with ``FREE`` past ``length`` (a 0-d device tensor): what a ranking over
        the whole capacity reads, so that it never picks a slot that is not in use."""
        return torch.where(self.slots < length, self.state, FREE)

    def remove(self, slots: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        """Free ``slots`` ``[E, H]`` (distinct and ascending per head, below ``length``: as
        ``selection.evicted_slots`` gives them); see the module docstring.

        ``lengths``: the length before and after on the device (int ``[2]``), which the host's
        ``length`` is not changed by (see the module docstring).
        """
        count = slots.shape[0]
        if count == 0:
            return
        length, new_length = (self.length, self.length - count) if lengths is None else lengths
        if self.candidates is not None:
            self.candidates.removed(self, slots)
        if self._marks is not None:
            fused_moves.remove(self.fields(), self._marks, slots, length if lengths is None else lengths)
            if lengths is None:
                self.length = new_length
            return
        holes = slots  # [E, H]: holes below new_length first, then evicted tail slots
        # tail slot new_length + j evicted? (holes below new_length are sent to a spare row E)
        in_tail = holes >= new_length
        tail_evicted = torch.zeros(count + 1, slots.shape[1], dtype=torch.uint8, device=slots.device)
        tail_evicted.scatter_(0, torch.where(in_tail, holes - new_length, count), 1)
        # survivors of the tail first; pair the i-th hole with the i-th survivor. Past the number of
        # holes, both sides are evicted tail slots: those copies land beyond the new prefix, unused.
        sources = new_length + tail_evicted[:count].argsort(dim=0, stable=True)  # [E, H]
        if lengths is None:
            self.length = new_length
        for field in self.fields():
            index_shape = (count, slots.shape[1]) + (1,) * (field.dim() - 2)
            sources_index = sources.view(index_shape).expand(count, *field.shape[1:])
            moved = field.gather(0, sources_index)
            field.scatter_(0, holes.view(index_shape).expand(count, *field.shape[1:]), moved)

    def truncate(self, length: int) -> None:
        """Forget the slots from ``length`` on (the tokens of a rolled-back frame, appended last)."""
        if self.candidates is not None:
            if length == 0:
                self.candidates.clear()
            elif length < self.length:
                self.candidates.forgotten(self, length, self.length - length)
        self.length = length

    def _grow(self, capacity: int) -> None:
        grown = []
        for field in self.fields():
            larger = field.new_zeros((capacity, *field.shape[1:]))
            larger[:self.length] = field[:self.length]
            grown.append(larger)
        self.keys, self.values, self.frames, self.state, self.mass, self.exposure = grown
        self.slots = torch.arange(capacity, dtype=torch.int32, device=self.keys.device).unsqueeze(1)
        if self._marks is not None:
            self._marks = self.state.new_zeros(self.state.shape)


def evictable_patches(state: torch.Tensor) -> torch.Tensor:
    """The patches an eviction may remove (``[N, H]`` bool): the candidates and a recycled frame's patches,
    which go first. InfiniteVGGT's mean key is theirs: the keys in the cache when it scores, as the seed's
    (``docs/memory_policies.md``)."""
    return (state == PATCH) | (state == EXPIRED_PATCH)


def state_scores(scores: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """``scores`` ``[N, H]`` with the states applied: protected never go, expired go first, specials first."""
    kept = torch.where(state == PATCH, scores, float("inf"))
    kept = torch.where(state == EXPIRED_PATCH, torch.finfo(scores.dtype).min, kept)
    return torch.where(state == EXPIRED_SPECIAL, float("-inf"), kept)
