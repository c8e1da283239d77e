"""The camera head's own KV cache: one key/value per stored frame, per refinement and trunk block.

The camera head attends over the camera tokens of the stored frames. Like the reference it
never evicts by default (``max_frames=0``: every stored frame of the sequence stays visible).
With ``max_frames > 0`` it keeps the ``scale_frames`` first frames and the newest others, an
explicit policy that bounds memory on endless streams.

Steps follow the aggregator's modes (``cache/base.py``), in the order ``cache/step_tracker.py``
enforces for both caches: STORE appends then attends (phase 1:
the step's frames attend to each other), SKIP attends over cache + itself and stores nothing,
DEFER appends and waits for ``commit`` (apply the bound) or ``rollback`` (drop the frame).

Storage: each (iteration, block) writes its keys/values into a buffer and attends over the
used prefix, which holds exactly the keys, in the order, that concatenating them would give.
With ``max_frames > 0`` the buffer holds ``max_frames + 1`` frames (a frame is written before
the bound applies) and is allocated once, at the first step: memory stays flat however long the
stream. Once the bound drops a frame, the next frame takes its row (``_free_row``): the buffer
then holds the same keys as the concatenation, in another order, which unmasked attention does
not see beyond the float summation order. Shifting the newest rows down instead cost every step
past ``max_frames`` 64 copies (16 blocks x K, V x a copy out and back; 0.28 ms on the H200,
``benchmarks/README.md``, eleventh session). Unbounded, it doubles when full. A SKIP frame is
written where the next frame would be and never counted.

Fixed shapes (on CUDA by default, ``fixed_shape``): from the second step on, a step writes at
the row read from a device tensor (``StepValues``) and attends over the whole buffer with a mask
of the rows not in use, so every step of a buffer size runs the same kernels and the
model can replay it from a CUDA graph (``graph_key``, ``model/step_graphs.py``). Buffers grow in
``begin_step``, never inside a step.
"""

from __future__ import annotations

from collections import deque

import torch

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.cache.sizes import check_max_frames
from gct_stream_ros.cache.step_tracker import StepTracker
from gct_stream_ros.cache.step_values import StepValues

UNBOUNDED_START_FRAMES = 64
"""Frames an unbounded buffer first holds (then doubled as needed)."""


class CameraKVCache:
    """The camera head's cache (see the module docstring)."""

    def __init__(self, num_iterations: int, num_blocks: int, scale_frames: int = 0, max_frames: int = 0,
                 fixed_shape: bool | None = None):
        check_max_frames(max_frames, scale_frames)
        self.fixed_shape = fixed_shape
        """Attend in fixed shapes (see the module docstring); None: on CUDA."""
        self.num_iterations = num_iterations
        self.num_blocks = num_blocks
        self.scale_frames = scale_frames
        self.max_frames = max_frames
        # [iteration][block] -> (K, V) buffers ``[capacity, H, D]``, kept across resets
        self._buffers: list[list[tuple[torch.Tensor, torch.Tensor] | None]] = [
            [None] * num_blocks for _ in range(num_iterations)]
        self._steps = StepTracker()
        self._length = 0
        self._free_row: int | None = None  # the row of the frame the bound dropped last, not yet reused
        self._ages: deque[int] = deque()  # the rows of the frames after the scale frames, oldest first
        self._bounds: StepValues | None = None  # [this step's first row, rows it attends]
        self._fixed_step = False
        self._unused: torch.Tensor | None = None  # this step's -inf over the unused rows, [1, capacity]
        self._slots: torch.Tensor | None = None  # this step's rows, [S]

    def reset(self) -> None:
        self._steps.reset()
        self._length = 0
        self._free_row = None
        self._ages.clear()

    @property
    def frames_stored(self) -> int:
        """Frames stored since the last reset (including any dropped by ``max_frames``)."""
        return self._steps.frames_stored

    @property
    def frames_cached(self) -> int:
        """Frames whose K/V are held now."""
        return self._length

    @property
    def nbytes(self) -> int:
        """Bytes of K/V storage allocated."""
        buffers = [kv[0] for blocks in self._buffers for kv in blocks if kv is not None]
        return sum(2 * keys.numel() * keys.element_size() for keys in buffers)

    def begin_step(self, num_frames: int, mode: StepMode) -> None:
        self._steps.begin(self._steps.next_frames(num_frames, mode), mode)
        if self._free_row is not None and num_frames > 1:  # several frames need consecutive rows
            self._keep_in_order(drop=0)
        first = self._buffers[0][0]
        fixed = first is not None and first[0].is_cuda if self.fixed_shape is None else self.fixed_shape
        self._fixed_step = first is not None and fixed
        if self._fixed_step:
            start, end = self._rows(num_frames)
            for iteration, blocks in enumerate(self._buffers):
                for block, kv in enumerate(blocks):
                    self._buffer(iteration, block, kv[0], end)
            self._bounds.set([start, end])

    def graph_key(self) -> tuple[object, ...] | None:
        """As ``GlobalKVCache.graph_key``: the buffers, or None before fixed-shape steps."""
        self._steps.current()
        if not self._fixed_step:
            return None
        keys = self._buffers[0][0][0]
        return (("camera", keys.shape[0], keys.data_ptr()),)

    def attend(self, iteration: int, block: int, q: torch.Tensor, k: torch.Tensor,
               v: torch.Tensor) -> torch.Tensor:
        """One camera token per frame: q, k, v ``[S, H, D]`` -> ``[S, H, D]``."""
        self._steps.current()  # raises outside a step
        start, end = self._rows(k.shape[0])
        keys, values = self._buffer(iteration, block, k, end)
        if self._fixed_step:
            bounds = self._bounds.values
            if self._unused is None or (iteration, block) == (0, 0):  # once per step, for all blocks
                used = torch.arange(keys.shape[0], device=keys.device) < bounds[1]
                # additive, in q's dtype: a boolean mask would be converted and checked at every call
                self._unused = torch.zeros(used.shape, dtype=q.dtype, device=q.device).masked_fill(
                    ~used, float("-inf"))[None]  # [1, capacity]
                self._slots = bounds[0] + torch.arange(k.shape[0], device=k.device)
            keys.index_copy_(0, self._slots, k)
            values.index_copy_(0, self._slots, v)
            return _attend_buffer(q, keys, values, self._unused)
        keys[start:start + k.shape[0]] = k
        values[start:start + k.shape[0]] = v
        # 3-D inputs: the unfused kernels, which are the fast ones for one query per frame (a batched
        # 4-D call picks the fused fp32 kernel, ~15x slower here: benchmarks/README.md)
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1), keys[:end].transpose(0, 1), values[:end].transpose(0, 1))  # [H, S, D]
        return out.transpose(0, 1)

    def end_step(self) -> None:
        frames, mode = self._steps.end()
        if mode is not StepMode.SKIP:
            start = self._rows(len(frames))[0]
            self._ages.extend(row for row in range(start, start + len(frames)) if row >= self.scale_frames)
            self._length += len(frames)
            self._free_row = None
        if mode is StepMode.STORE:
            self._bound()

    def commit(self) -> None:
        self._steps.commit()
        self._bound()

    def rollback(self) -> None:
        self._steps.rollback()
        self._length -= 1
        if self._length < self.scale_frames:  # a scale frame's row, the last one
            return
        row = self._ages.pop()
        if row != self._length:  # it had taken a dropped frame's row: free again
            self._free_row = row

    def _rows(self, num_frames: int) -> tuple[int, int]:
        """(the first row the step's frames are written to, the rows attended ``[0, end)``)."""
        if self._free_row is not None:  # every row holds a kept frame but this one
            return self._free_row, self._length + 1
        return self._length, self._length + num_frames

    def _buffer(self, iteration: int, block: int, k: torch.Tensor,
                needed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (iteration, block) buffers, allocated or grown to hold ``needed`` frames like ``k``."""
        current = self._buffers[iteration][block]
        if current is not None and current[0].shape[0] >= needed and current[0].dtype == k.dtype \
                and current[0].device == k.device and current[0].shape[1:] == k.shape[1:]:
            return current
        if self.max_frames:
            capacity = max(self.max_frames + 1, needed)
        else:
            held = 0 if current is None else current[0].shape[0]
            capacity = max(needed, UNBOUNDED_START_FRAMES, 2 * held)
        # zeros: a fixed-shape step reads the unused rows too (masked, but never NaN)
        grown = tuple(k.new_zeros((capacity, *k.shape[1:])) for _ in range(2))
        if self._bounds is None or self._bounds.values.device != k.device:
            self._bounds = StepValues(2, k.device)
        if current is not None and current[0].shape[1:] == k.shape[1:]:
            held = self._length + (self._free_row is not None)
            for new, old in zip(grown, current):
                new[:held] = old[:held]
        self._buffers[iteration][block] = grown
        return grown

    def _bound(self) -> None:
        """Apply ``max_frames``: keep the scale frames and the newest others."""
        excess = self._length - self.max_frames
        if not self.max_frames or excess <= 0:
            return
        if excess == 1 and self._free_row is None:  # the steady state: the next frame takes its row
            self._free_row = self._ages.popleft()
            self._length -= 1
            return
        self._keep_in_order(drop=excess)

    def _keep_in_order(self, drop: int) -> None:
        """Rewrite the buffers as the scale frames, then the others oldest first, less the ``drop`` oldest of
        those, in consecutive rows from 0 (no free row)."""
        kept = list(range(min(self._length, self.scale_frames))) + list(self._ages)[drop:]
        rows = torch.tensor(kept, device=self._buffers[0][0][0].device)
        for blocks in self._buffers:
            for buffers in blocks:
                for buffer in buffers:
                    buffer[:len(kept)] = buffer.index_select(0, rows)
        self._length = len(kept)
        self._ages = deque(range(self.scale_frames, len(kept)))
        self._free_row = None


def _attend_buffer(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                   unused: torch.Tensor) -> torch.Tensor:
    """Attention of q ``[S, H, D]`` over a whole buffer ``[capacity, H, D]`` whose unused rows
    ``unused`` (additive, ``[1, capacity]``) hides: ``[S, H, D]``.

    A plain softmax: a query always sees at least its own frame, so SDPA's guard against fully
    masked rows (two more kernels a call, 16 calls a frame) is not needed.
    """
    scores = torch.baddbmm(unused, q.transpose(0, 1), keys.permute(1, 2, 0), alpha=q.shape[-1] ** -0.5)
    return (scores.softmax(dim=-1) @ values.transpose(0, 1)).transpose(0, 1)  # [H, S, cap] -> [S, H, D]
