"""The aggregator's q/k LayerNorms as one CUDA kernel (Triton) with a fixed launch configuration.

Every aggregator block normalises each head's query and key (``Attention.q_norm``/``k_norm``, 64
channels) before RoPE: 2 x 16 heads x ~1k tokens of 64 values per block, 48 blocks a frame. Left to
``torch.compile``, each is a persistent reduction whose rows per program (1, 8 or 32) Inductor picks
by timing the candidates at compile time, with the caches flushed. Those timings do not rank them as
the step runs them, on a projection the GEMM has just written to L2: on the H200 k's kernel took
3.0 us as compiled in one fresh cache and 10.7 us (one row per program) in another, and a bad pick
stays in the Inductor cache, where every block shares it (identical kernel source): 0.99 ms a step
for 92 launches (``benchmarks/README.md``, twelfth session), ~0.2 ms with this kernel.

Here one launch normalises both, each program ``ROWS`` (token, head) rows of q or of k, the same on
every machine. fp32 arithmetic and output, as ``F.layer_norm`` under autocast: mean, then the
variance of the centred values, ``(x - mean) * rsqrt(var + eps) * weight + bias``. Used where
``available``; elsewhere (CPU, fp32, no Triton) the modules run as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from gct_stream_ros.optional_packages import TRITON

ROWS = 32
"""(token, head) rows of 64 channels per program: 8 KiB of fp32 output."""
WARPS = 4

if TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _qk_layer_norm(qkv_ptr, q_weight_ptr, q_bias_ptr, k_weight_ptr, k_bias_ptr, out_ptr, num_rows, eps,
                       stride_token, stride_part, num_heads: tl.constexpr, head_dim: tl.constexpr,
                       rows: tl.constexpr):
        """Rows ``[rows, head_dim]`` of part ``program_id(1)`` (0: q, 1: k) of ``qkv`` ``[M, 3, H, D]``
        (head and channel strides ``D`` and 1) into ``out`` ``[2, M * H, D]``."""
        block, part = tl.program_id(0), tl.program_id(1)
        row = block * rows + tl.arange(0, rows)
        channel = tl.arange(0, head_dim)
        valid = (row < num_rows)[:, None]
        token, head = row // num_heads, row % num_heads
        source = qkv_ptr + token * stride_token + part * stride_part + head * head_dim
        x = tl.load(source[:, None] + channel[None, :], mask=valid, other=0.0).to(tl.float32)
        mean = tl.sum(x, axis=1) / head_dim
        centred = x - mean[:, None]
        variance = tl.sum(centred * centred, axis=1) / head_dim
        if part == 0:
            weight, bias = tl.load(q_weight_ptr + channel), tl.load(q_bias_ptr + channel)
        else:
            weight, bias = tl.load(k_weight_ptr + channel), tl.load(k_bias_ptr + channel)
        weight, bias = weight.to(tl.float32), bias.to(tl.float32)
        normed = centred * tl.rsqrt(variance + eps)[:, None] * weight[None, :] + bias[None, :]
        target = out_ptr + (part * num_rows + row[:, None]) * head_dim + channel[None, :]
        tl.store(target, normed, mask=valid)


def available(qkv: torch.Tensor, q_norm: nn.Module, k_norm: nn.Module) -> bool:
    """The kernel serves this projection: CUDA, half precision under autocast (the aggregator's steps,
    whose LayerNorms then run in fp32), LayerNorms with the same eps and an affine part, a power-of-two
    head dim, each head's channels contiguous (as the projection's view has them), Triton installed."""
    return (TRITON and qkv.is_cuda and qkv.dtype in (torch.bfloat16, torch.float16)
            and torch.is_autocast_enabled(qkv.device.type)
            and isinstance(q_norm, nn.LayerNorm) and isinstance(k_norm, nn.LayerNorm)
            and q_norm.eps == k_norm.eps and q_norm.weight is not None and k_norm.weight is not None
            and q_norm.bias is not None and k_norm.bias is not None
            and qkv.shape[-1] & (qkv.shape[-1] - 1) == 0
            and qkv.stride(-1) == 1 and qkv.stride(-2) == qkv.shape[-1])


def qk_layer_norm(qkv: torch.Tensor, q_norm: nn.LayerNorm,
                  k_norm: nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``qkv`` ``[..., 3, H, D]`` (strides ``D`` and 1 in the last two dims) -> ``q_norm(q)``,
    ``k_norm(k)`` ``[..., H, D]`` in fp32."""
    *leading, parts, num_heads, head_dim = qkv.shape
    flat = qkv.reshape(-1, parts, num_heads, head_dim)
    num_rows = flat.shape[0] * num_heads
    out = torch.empty(2, num_rows, head_dim, dtype=torch.float32, device=qkv.device)
    _qk_layer_norm[(triton.cdiv(num_rows, ROWS), 2)](
        flat, q_norm.weight, q_norm.bias, k_norm.weight, k_norm.bias, out, num_rows, q_norm.eps,
        flat.stride(0), flat.stride(1),
        num_heads=num_heads, head_dim=head_dim, rows=ROWS, num_warps=WARPS)
    q, k = out.view(2, *leading, num_heads, head_dim).unbind(0)
    return q, k
