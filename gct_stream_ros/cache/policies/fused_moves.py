"""The token pool's writes and moves as fused CUDA kernels (Triton), instead of one torch op per field.

A pool has six per-slot fields (``token_pool.py``); written with torch ops, appending a frame
is a dozen small kernels and an eviction's moves another dozen. Each costs ~5 us of GPU time and
more of host time (the budgeted step was host-bound at ~100 ops per layer on the H200,
``benchmarks/README.md``). Here:

* ``expire``: a recycled frame's slots marked expired, one pass over ``[C, H]`` (eight torch ops
  otherwise, each over the whole pool, at every step once ``cache.max_frames`` recycles frames);
* ``write_run``: one run of tokens (same frame and state) into slots ``[start, start + N)``:
  keys, values, frame, state, and a zero mass and exposure; a frame's specials (first in the
  model's order, last in the pool's) and patches in one launch;
* ``remove``: ``TokenPool.remove`` in O(E) work per head, never a pass over the capacity. The
  freed slots come ascending per head (``selection.evicted_slots``): the first ``pairs`` of them
  are the holes below the new length, the rest the freed slots of the tail ``[length - E, length)``.
  One program per head marks those tail slots in ``marks`` and numbers
  the kept tail slots (a prefix sum over the E tail slots); a second kernel moves every field of
  the i-th kept slot into the i-th hole and clears the marks it set, so ``marks`` is all zero
  before and after every removal (``TokenPool`` allocates it zeroed) and needs no memset.

Either reads its slot and frame numbers or lengths from the device when given them as tensors
(the budgeted cache's fixed-shape steps, which a CUDA graph replays for any step).

Used where ``available(keys)``; elsewhere ``TokenPool`` runs the torch ops, which the CPU tests pin.
"""

from __future__ import annotations

import torch

from gct_stream_ros.optional_packages import TRITON

BLOCK_SLOTS = 16
EXPIRE_BLOCK = 4096
"""Cells (slot x head) per program of ``expire``."""
PAIR_BLOCK = 1024


def available(keys: torch.Tensor) -> bool:
    """The fused writes serve this storage: CUDA, Triton installed."""
    return TRITON and keys.is_cuda


if TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def device_or_host(host, device_ptr, on_device: tl.constexpr):
        """A kernel's number: read from the device (a fixed-shape step) or given by the host."""
        return tl.load(device_ptr) if on_device else host

    @triton.jit
    def _expire(frames_ptr, state_ptr, frame, length, frame_ptr, length_ptr, num_cells,
                num_heads: tl.constexpr, special: tl.constexpr, expired_patch: tl.constexpr,
                expired_special: tl.constexpr, block: tl.constexpr, on_device: tl.constexpr):
        frame_index = device_or_host(frame, frame_ptr, on_device)
        in_use = device_or_host(length, length_ptr, on_device)
        cells = tl.program_id(0) * block + tl.arange(0, block)
        mine = (cells < num_cells) & (cells // num_heads < in_use)
        mine = mine & (tl.load(frames_ptr + cells, mask=mine, other=-1) == frame_index)
        state = tl.load(state_ptr + cells, mask=mine, other=0)
        expired = tl.where(state == special, expired_special, expired_patch).to(tl.uint8)
        tl.store(state_ptr + cells, expired, mask=mine)

    @triton.jit
    def _write_run(keys_ptr, values_ptr, frames_ptr, state_ptr, mass_ptr, exposure_ptr, new_keys_ptr,
                   new_values_ptr, start, count, frame, state, leading, leading_state, key_stride_n,
                   key_stride_h, value_stride_n, value_stride_h, start_ptr, frame_ptr,
                   num_heads: tl.constexpr, head_dim: tl.constexpr, block: tl.constexpr,
                   on_device: tl.constexpr):
        first_slot = device_or_host(start, start_ptr, on_device)
        frame_index = device_or_host(frame, frame_ptr, on_device)
        rows = tl.program_id(0) * block + tl.arange(0, block)
        valid = rows < count
        is_leading = rows < leading  # the first ``leading`` source rows go to the end of the span
        slots = tl.where(is_leading, first_slot + count - leading + rows, first_slot + rows - leading)
        heads = tl.arange(0, num_heads)
        dims = tl.arange(0, head_dim)
        row_mask = valid[:, None, None]
        row, head, dim = rows[:, None, None], heads[None, :, None], dims[None, None, :]
        target = (slots[:, None, None] * num_heads + head) * head_dim + dim
        key_source = row * key_stride_n + head * key_stride_h + dim
        tl.store(keys_ptr + target, tl.load(new_keys_ptr + key_source, mask=row_mask), mask=row_mask)
        value_source = row * value_stride_n + head * value_stride_h + dim
        tl.store(values_ptr + target, tl.load(new_values_ptr + value_source, mask=row_mask), mask=row_mask)
        slot = slots[:, None] * num_heads + heads[None, :]
        ones = tl.full([block, num_heads], 1, tl.int32)
        tl.store(frames_ptr + slot, ones * frame_index, mask=valid[:, None])
        row_state = tl.where(is_leading, leading_state, state)
        tl.store(state_ptr + slot, (ones * row_state[:, None]).to(tl.uint8), mask=valid[:, None])
        tl.store(mass_ptr + slot, tl.zeros([block, num_heads], tl.float32), mask=valid[:, None])
        tl.store(exposure_ptr + slot, tl.zeros([block, num_heads], tl.float32), mask=valid[:, None])

    @triton.jit
    def _pair(sorted_ptr, marks_ptr, sources_ptr, pairs_ptr, count, new_length, lengths_ptr, sorted_stride_e,
              sorted_stride_h, num_heads: tl.constexpr, block: tl.constexpr, blocks: tl.constexpr,
              on_device: tl.constexpr):
        """Per head: ``sources`` = the kept slots of the tail ``[new_length, new_length + count)`` in order;
        ``pairs`` = their number, which is the number of holes below ``new_length``."""
        kept_length = device_or_host(new_length, lengths_ptr + 1, on_device)  # device: [length, new_length]
        head = tl.program_id(0)
        for start in range(0, blocks * block, block):  # blocks * block >= count; one in the steady state
            rows = start + tl.arange(0, block)
            slot = tl.load(sorted_ptr + rows * sorted_stride_e + head * sorted_stride_h, mask=rows < count,
                           other=0).to(tl.int32)
            freed_in_tail = (rows < count) & (slot >= kept_length)
            tl.store(marks_ptr + slot * num_heads + head, tl.full([block], 1, tl.uint8), mask=freed_in_tail)
        tl.debug_barrier()  # the marks above, stored by other threads of this program, are read below
        kept_found = tl.zeros([], tl.int32)
        for start in range(0, blocks * block, block):
            offset = start + tl.arange(0, block)
            slot = kept_length + offset
            freed = tl.load(marks_ptr + slot * num_heads + head, mask=offset < count, other=1) != 0
            kept = (~freed).to(tl.int32)
            rank = kept_found + tl.cumsum(kept, axis=0) - 1
            tl.store(sources_ptr + rank * num_heads + head, slot, mask=kept != 0)
            kept_found += tl.sum(kept, axis=0)
        tl.store(pairs_ptr + head, kept_found)

    @triton.jit
    def _move(keys_ptr, values_ptr, frames_ptr, state_ptr, mass_ptr, exposure_ptr, marks_ptr, sorted_ptr,
              sources_ptr, pairs_ptr, count, sorted_stride_e, sorted_stride_h, num_heads: tl.constexpr,
              head_dim: tl.constexpr, block: tl.constexpr):
        """Rows below ``pairs``: the i-th kept slot into the i-th hole; the rest (tail slots): unmarked."""
        rows = (tl.program_id(0) * block + tl.arange(0, block))[:, None]
        heads = tl.arange(0, num_heads)[None, :]
        pairs = tl.load(pairs_ptr + heads)
        freed = tl.load(sorted_ptr + rows * sorted_stride_e + heads * sorted_stride_h, mask=rows < count,
                        other=0).to(tl.int32) * num_heads + heads
        in_tail = (rows >= pairs) & (rows < count)
        tl.store(marks_ptr + freed, tl.zeros([block, num_heads], tl.uint8), mask=in_tail)
        valid = rows < pairs
        hole = tl.where(valid, freed, 0)
        source = tl.load(sources_ptr + rows * num_heads + heads, mask=valid, other=0) * num_heads + heads
        tl.store(frames_ptr + hole, tl.load(frames_ptr + source, mask=valid), mask=valid)
        tl.store(state_ptr + hole, tl.load(state_ptr + source, mask=valid), mask=valid)
        tl.store(mass_ptr + hole, tl.load(mass_ptr + source, mask=valid), mask=valid)
        tl.store(exposure_ptr + hole, tl.load(exposure_ptr + source, mask=valid), mask=valid)
        dims = tl.arange(0, head_dim)[None, None, :]
        hole_row, source_row = hole[:, :, None] * head_dim + dims, source[:, :, None] * head_dim + dims
        row_mask = valid[:, :, None]
        tl.store(keys_ptr + hole_row, tl.load(keys_ptr + source_row, mask=row_mask), mask=row_mask)
        tl.store(values_ptr + hole_row, tl.load(values_ptr + source_row, mask=row_mask), mask=row_mask)


def _numbers_or_pointers(first: int | torch.Tensor, second: int | torch.Tensor,
                         placeholder: torch.Tensor) -> tuple[bool, tuple[int, int], tuple[torch.Tensor, ...]]:
    """A kernel's two numbers given both by the host or both as 0-d device tensors: (on the device, the
    numbers' arguments, the pointers' arguments); the side not read gets zeros or ``placeholder``."""
    if isinstance(first, torch.Tensor):
        return True, (0, 0), (first, second)
    return False, (first, second), (placeholder, placeholder)


def expire(frames: torch.Tensor, state: torch.Tensor, frame: int | torch.Tensor, length: int | torch.Tensor,
           special: int, expired_patch: int, expired_special: int) -> None:
    """``TokenPool.expire`` in one kernel: every slot below ``length`` of ``frame`` (``frames``/``state``
    ``[C, H]``) takes ``expired_special`` if it is ``special``, else ``expired_patch``. ``frame`` and
    ``length``: both numbers or both 0-d int32 device tensors."""
    on_device, numbers, pointers = _numbers_or_pointers(frame, length, frames)
    num_heads = frames.shape[1]
    cells = frames.shape[0] * num_heads
    _expire[(triton.cdiv(cells, EXPIRE_BLOCK),)](frames, state, *numbers, *pointers, cells,
                                                 num_heads=num_heads, special=special,
                                                 expired_patch=expired_patch, expired_special=expired_special,
                                                 block=EXPIRE_BLOCK, on_device=on_device)


def write_run(fields: tuple[torch.Tensor, ...], keys: torch.Tensor, values: torch.Tensor,
              start: int | torch.Tensor, frame: int | torch.Tensor, state: int, leading: int = 0,
              leading_state: int = 0) -> None:
    """Write ``keys``/``values`` ``[N, H, D]`` (last dim contiguous) of one frame in ``state`` at ``start``;
    their first ``leading`` tokens go last, in ``leading_state`` (a frame's specials after its patches).
    ``start`` and ``frame``: both numbers or both 0-d int32 device tensors."""
    count, num_heads, head_dim = keys.shape
    on_device, (first, index), pointers = _numbers_or_pointers(start, frame, keys)
    _write_run[(triton.cdiv(count, BLOCK_SLOTS),)](*fields, keys, values, first, count, index, state, leading,
                                                   leading_state, keys.stride(0), keys.stride(1),
                                                   values.stride(0), values.stride(1), *pointers,
                                                   num_heads=num_heads, head_dim=head_dim, block=BLOCK_SLOTS,
                                                   on_device=on_device)


def remove(fields: tuple[torch.Tensor, ...], marks: torch.Tensor, slots: torch.Tensor,
           length: int | torch.Tensor) -> None:
    """Free ``slots`` ``[E, H]`` (each column ascending) of the first ``length``: move the kept slots from
    ``length - E`` on into the freed ones below it, per head (``TokenPool.remove``). ``marks``: a ``[C, H]``
    uint8 scratch, all zero (and left so). ``length``: a number, or the lengths before and after on the
    device (int32 ``[2]``). Head-shared slots may come as ``[E, 1]`` expanded to ``[E, H]``."""
    count, num_heads = slots.shape
    sorted_slots, sorted_strides = slots, slots.stride()  # a shared column: stride 0 over heads
    sources = torch.empty(count, num_heads, dtype=torch.int32, device=slots.device)
    pairs = torch.empty(num_heads, dtype=torch.int32, device=slots.device)
    on_device = isinstance(length, torch.Tensor)
    new_length, lengths = (0, length) if on_device else (length - count, pairs)  # pairs: unread
    block = min(triton.next_power_of_2(count), PAIR_BLOCK)
    _pair[(num_heads,)](sorted_slots, marks, sources, pairs, count, new_length, lengths, *sorted_strides,
                        num_heads=num_heads, block=block, blocks=triton.cdiv(count, block),
                        on_device=on_device)
    _move[(triton.cdiv(count, BLOCK_SLOTS),)](*fields, marks, sorted_slots, sources, pairs, count,
                                              *sorted_strides, num_heads=num_heads,
                                              head_dim=fields[0].shape[-1], block=BLOCK_SLOTS)
