"""Batched matmul whose products are accumulated and written in fp32, whatever the inputs' dtype.

The policies score cached keys that are stored in bf16/fp16. Converting a layer's keys to fp32
first would write (and read back) twice their bytes; on CUDA, torch's ``bmm`` reads bf16/fp16
as they are and writes fp32 (``out_dtype``, torch >= 2.8). An fp32 right-hand side is then split
into a bf16/fp16 head and the rounding rest, multiplied side by side and summed, so it keeps
~16 significant bits instead of 8. Elsewhere (CPU) both sides are converted to fp32.
"""

from __future__ import annotations

import torch

BMM_TO_FP32 = "dtype" in torch.ops.aten.bmm.overloads()
"""This torch's ``bmm`` can write fp32 from bf16/fp16 inputs (CUDA kernels)."""


def bmm_fp32(low: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``low @ other``: ``[B, M, K] x [B, K, N] -> [B, M, N]`` fp32 (see the module docstring)."""
    if not (BMM_TO_FP32 and low.is_cuda and low.dtype in (torch.bfloat16, torch.float16)):
        return torch.bmm(low.float(), other.float())
    if other.dtype == low.dtype:
        return torch.bmm(low, other, out_dtype=torch.float32)
    head = other.to(low.dtype)
    rest = (other.float() - head.float()).to(low.dtype)
    both = torch.bmm(low, torch.cat([head, rest], dim=-1), out_dtype=torch.float32)  # [B, M, 2N]
    columns = other.shape[-1]
    return both[..., :columns] + both[..., columns:]
