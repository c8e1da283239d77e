"""Unmasked attention of a step's queries over a dense key set (SDPA), whole or in parts.

Every CPU/fp32 cache path funnels through ``dense_attention`` so that caches holding the same
keys in the same (canonical) order give bit-identical outputs. The contiguous cache's GPU path
attends over key ranges of its storage (``range_attention``: the range is read from the device,
so a CUDA graph can replay it for another step's range; ``cudnn_partial_attention`` over a fixed
range) and merges two of them by their log-sum-exps (``merge_partials``; ``merged_lse`` is the union's).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

HALF_DTYPES = (torch.bfloat16, torch.float16)


def dense_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """q ``[S, P, H, D]`` over keys/values ``[N, H, D]`` -> ``[S, P, H, D]`` in q's dtype."""
    num_frames, tokens, heads, head_dim = q.shape
    query = q.reshape(1, num_frames * tokens, heads, head_dim).transpose(1, 2)  # [1, H, S*P, D]
    key = keys.to(q.dtype).unsqueeze(0).transpose(1, 2)  # [1, H, N, D]
    value = values.to(q.dtype).unsqueeze(0).transpose(1, 2)
    out = F.scaled_dot_product_attention(query, key, value, scale=head_dim**-0.5)
    return out.transpose(1, 2).reshape(num_frames, tokens, heads, head_dim)


def heads_first(x: torch.Tensor) -> torch.Tensor:
    """``[..., N, H, D]`` tokens (leading dims flattened) -> ``[1, H, N, D]``, a view when it can be."""
    return x.reshape(1, -1, *x.shape[-2:]).transpose(1, 2)


def partial_attention(query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention ``[1, H, Q, D]`` and its natural log-sum-exp ``[1, H, Q, 1]`` (fp32).

    On CUDA in half precision: the flash kernel, any key count, no per-shape set-up.
    """
    scale = query.shape[-1] ** -0.5
    if query.is_cuda and query.dtype in HALF_DTYPES:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, scale=scale)[:2]
        return out, lse.reshape(*out.shape[:-1], 1).float()
    # in fp32 (a no-op for fp32 inputs): the log-sum-exp is the merge's blend weight, fp32 as the flash
    # kernel's (a half-precision weight also fails ``torch.lerp`` in ``merge_partials``)
    scores = (query.float() @ key.float().transpose(-1, -2)) * scale  # [1, H, Q, N]
    lse = scores.logsumexp(dim=-1, keepdim=True)
    return ((scores - lse).exp() @ value.float()).to(value.dtype), lse


def range_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                    bounds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``partial_attention`` of ``query`` ``[Q, H, D]`` over the tokens ``[bounds[0], bounds[1])`` of
    ``keys``/``values`` ``[N, H, D]``; ``bounds``: int32 ``[2]`` on the keys' device.

    On CUDA in half precision: the flash kernel's variable-length form, which reads the range from
    ``bounds`` on the device (no host sync, capturable once for any range). Elsewhere the range is
    read on the host.
    """
    if query.is_cuda and query.dtype in HALF_DTYPES:
        num_queries = query.shape[0]
        query_bounds = _query_bounds(num_queries, query.device)
        out, lse = torch.ops.aten._flash_attention_forward(
            query, keys, values, query_bounds, bounds, num_queries, keys.shape[0], 0.0, False, False,
            scale=query.shape[-1] ** -0.5)[:2]
        return out.transpose(0, 1)[None], lse[None, :, :, None]  # [1, H, Q, D], [1, H, Q, 1]
    start, stop = bounds.tolist()
    key, value = heads_first(keys[start:stop]), heads_first(values[start:stop])
    return partial_attention(heads_first(query), key, value)


@functools.cache
def _query_bounds(num_queries: int, device: torch.device) -> torch.Tensor:
    """``[0, Q]`` for the variable-length kernel (made at the first, uncaptured, step of a size), on the
    device without a copy from the host (which would synchronise)."""
    return torch.arange(2, dtype=torch.int32, device=device) * num_queries


def cudnn_partial_attention(query: torch.Tensor, key: torch.Tensor,
                            value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``partial_attention`` through cuDNN (CUDA, half precision): ~1.3x the flash kernel's rate on an
    H200 (``benchmarks/attention_layer.py``), but an execution plan per shape (~45 ms the first time)."""
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(query, key, value, None, True,
                                                                  scale=query.shape[-1] ** -0.5)[:2]
    return out, lse.reshape(*out.shape[:-1], 1).float()


def merge_partials(first: tuple[torch.Tensor, torch.Tensor],
                   second: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The attention over the union of two disjoint key sets from their ``partial_attention`` results
    (exact up to rounding: unmasked attention does not depend on the order or grouping of its keys).

    The second part's share of the softmax mass is ``sigmoid(lse_b - lse_a)``: one blend, few kernels.
    """
    (out_a, lse_a), (out_b, lse_b) = first, second
    share = torch.sigmoid(lse_b - lse_a)  # [1, H, Q, 1]
    return torch.lerp(out_a.float(), out_b.float(), share).to(out_a.dtype)


def merged_lse(first: tuple[torch.Tensor, torch.Tensor],
               second: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The log-sum-exp ``[H, Q]`` fp32 of the union of two single-batch ``partial_attention`` parts (what
    the attention mass needs to turn a query's logits into probabilities, ``attention_mass.py``)."""
    return torch.logaddexp(first[1], second[1])[0, :, :, 0]


def merge_partials_tokens_first(first: tuple[torch.Tensor, torch.Tensor],
                                second: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``merge_partials`` of two single-batch parts, as contiguous tokens-first ``[Q, H, D]`` (the
    layout the model reads back). Compiled, it is one kernel instead of about seven small eager ones
    (sigmoid, casts, blend, transpose copy): ~11 us less a global layer on an H200
    (``benchmarks/README.md``)."""
    return merge_partials(first, second)[0].transpose(0, 1).contiguous()


def merge_partials_tokens_first_with_lse(first: tuple[torch.Tensor, torch.Tensor],
                                         second: tuple[torch.Tensor, torch.Tensor]
                                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``merge_partials_tokens_first`` and ``merged_lse`` of the same parts: what the budgeted cache's
    fixed-shape steps read back (compiled by ``PoolAttention.compile_regions``: one kernel instead of
    about eight eager ones, as the contiguous cache's merge)."""
    return merge_partials_tokens_first(first, second), merged_lse(first, second)
