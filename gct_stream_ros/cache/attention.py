"""Unmasked attention of a step's queries over a dense key set (SDPA).

Every CPU/fp32 cache path funnels through this one function so that caches holding the same
keys in the same (canonical) order give bit-identical outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """q ``[S, P, H, D]`` over keys/values ``[N, H, D]`` -> ``[S, P, H, D]`` in q's dtype."""
    num_frames, tokens, heads, head_dim = q.shape
    query = q.reshape(1, num_frames * tokens, heads, head_dim).transpose(1, 2)  # [1, H, S*P, D]
    key = keys.to(q.dtype).unsqueeze(0).transpose(1, 2)  # [1, H, N, D]
    value = values.to(q.dtype).unsqueeze(0).transpose(1, 2)
    out = F.scaled_dot_product_attention(query, key, value, scale=head_dim**-0.5)
    return out.transpose(1, 2).reshape(num_frames, tokens, heads, head_dim)
