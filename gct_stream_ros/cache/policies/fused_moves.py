"""The token pool's writes and moves as one CUDA kernel each (Triton), instead of one torch op per field.

A pool has six per-slot fields (``token_pool.py``); written with torch ops, appending a frame
is a dozen small kernels and an eviction's moves another dozen. Each costs ~5 us of GPU time and
more of host time (the budgeted step was host-bound at ~100 ops per layer on the H200,
``benchmarks/README.md``). Here:

* ``write_run``: one run of tokens (same frame and state) into slots ``[start, start + N)``:
  keys, values, frame, state, and a zero mass and exposure;
* ``move``: every field of slots ``sources`` ``[E, H]`` into ``holes`` ``[E, H]``, per head.
  ``TokenPool.remove`` pairs them so that a slot read by a move that matters is never written
  by another (the extra pairs only copy evicted tail slots onto each other).

Used where ``available(keys)``; elsewhere ``TokenPool`` runs the torch ops, which the CPU tests pin.
"""

from __future__ import annotations

import importlib.util

import torch

TRITON = importlib.util.find_spec("triton") is not None
"""Triton is installed (the fused kernels here and in ``fused_scores.py`` need it)."""
BLOCK_SLOTS = 16


def available(keys: torch.Tensor) -> bool:
    """The fused writes serve this storage: CUDA, Triton installed."""
    return TRITON and keys.is_cuda


if TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _write_run(keys_ptr, values_ptr, frames_ptr, state_ptr, mass_ptr, exposure_ptr, new_keys_ptr,
                   new_values_ptr, start, count, frame, state, key_stride_n, key_stride_h, value_stride_n,
                   value_stride_h, num_heads: tl.constexpr, head_dim: tl.constexpr, block: tl.constexpr):
        rows = tl.program_id(0) * block + tl.arange(0, block)
        valid = rows < count
        heads = tl.arange(0, num_heads)
        dims = tl.arange(0, head_dim)
        row_mask = valid[:, None, None]
        row, head, dim = rows[:, None, None], heads[None, :, None], dims[None, None, :]
        target = ((start + row) * num_heads + head) * head_dim + dim
        key_source = row * key_stride_n + head * key_stride_h + dim
        tl.store(keys_ptr + target, tl.load(new_keys_ptr + key_source, mask=row_mask), mask=row_mask)
        value_source = row * value_stride_n + head * value_stride_h + dim
        tl.store(values_ptr + target, tl.load(new_values_ptr + value_source, mask=row_mask), mask=row_mask)
        slot = (start + rows[:, None]) * num_heads + heads[None, :]
        ones = tl.full([block, num_heads], 1, tl.int32)
        tl.store(frames_ptr + slot, ones * frame, mask=valid[:, None])
        tl.store(state_ptr + slot, (ones * state).to(tl.uint8), mask=valid[:, None])
        tl.store(mass_ptr + slot, tl.zeros([block, num_heads], tl.float32), mask=valid[:, None])
        tl.store(exposure_ptr + slot, tl.zeros([block, num_heads], tl.float32), mask=valid[:, None])

    @triton.jit
    def _move(keys_ptr, values_ptr, frames_ptr, state_ptr, mass_ptr, exposure_ptr, holes_ptr, sources_ptr,
              count, num_heads: tl.constexpr, head_dim: tl.constexpr, block: tl.constexpr):
        rows = tl.program_id(0) * block + tl.arange(0, block)
        valid = rows[:, None] < count
        heads = tl.arange(0, num_heads)[None, :]
        hole = tl.load(holes_ptr + rows[:, None] * num_heads + heads, mask=valid, other=0) * num_heads + heads
        source = tl.load(sources_ptr + rows[:, None] * num_heads + heads, mask=valid, other=0)
        source = source * num_heads + heads
        tl.store(frames_ptr + hole, tl.load(frames_ptr + source, mask=valid), mask=valid)
        tl.store(state_ptr + hole, tl.load(state_ptr + source, mask=valid), mask=valid)
        tl.store(mass_ptr + hole, tl.load(mass_ptr + source, mask=valid), mask=valid)
        tl.store(exposure_ptr + hole, tl.load(exposure_ptr + source, mask=valid), mask=valid)
        dims = tl.arange(0, head_dim)[None, None, :]
        hole_row, source_row = hole[:, :, None] * head_dim + dims, source[:, :, None] * head_dim + dims
        row_mask = valid[:, :, None]
        tl.store(keys_ptr + hole_row, tl.load(keys_ptr + source_row, mask=row_mask), mask=row_mask)
        tl.store(values_ptr + hole_row, tl.load(values_ptr + source_row, mask=row_mask), mask=row_mask)


def write_run(fields: tuple[torch.Tensor, ...], keys: torch.Tensor, values: torch.Tensor, start: int,
              frame: int, state: int) -> None:
    """Write ``keys``/``values`` ``[N, H, D]`` (last dim contiguous) of one frame and state at ``start``."""
    count, num_heads, head_dim = keys.shape
    _write_run[(triton.cdiv(count, BLOCK_SLOTS),)](*fields, keys, values, start, count, frame, state,
                                                   keys.stride(0), keys.stride(1), values.stride(0),
                                                   values.stride(1), num_heads=num_heads, head_dim=head_dim,
                                                   block=BLOCK_SLOTS)


def move(fields: tuple[torch.Tensor, ...], holes: torch.Tensor, sources: torch.Tensor) -> None:
    """Copy every field's slots ``sources`` ``[E, H]`` into ``holes`` ``[E, H]``, per head."""
    count, num_heads = holes.shape
    _move[(triton.cdiv(count, BLOCK_SLOTS),)](*fields, holes.contiguous(), sources.contiguous(), count,
                                              num_heads=num_heads, head_dim=fields[0].shape[-1],
                                              block=BLOCK_SLOTS)
