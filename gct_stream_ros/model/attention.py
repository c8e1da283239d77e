"""Multi-head attention whose token mixing is supplied by the caller.

The projections and the optional qk-norm are parameters of the layer; *which* keys a query
sees (its own frame, the KV cache, the camera-head cache) and how positions rotate q and k
are decided by the caller through a ``Mixer``, so one module serves every block kind.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gct_stream_ros.model import qk_norm

Mixer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(q, k, v) ``[B, N, H, D]`` (q/k normalised, not rotated) -> attention output ``[B, N, H, D]``."""


def self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unmasked attention within each batch item: ``[B, N, H, D]`` -> ``[B, N, H, D]``."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, norm_eps: float = 1e-5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mix: Mixer = self_attention) -> torch.Tensor:
        """``[B, N, C]`` -> ``[B, N, C]``."""
        return self.project_out(mix(*self.project_in(x)))

    def project_in(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, N, C]`` -> q, k (normalised), v ``[B, N, H, D]``: what a ``Mixer`` takes."""
        # qkv rows are ordered (q, k, v), each head-major
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))
        q, k, v = qkv.unbind(-3)
        if qk_norm.available(qkv, self.q_norm, self.k_norm):
            return *qk_norm.qk_layer_norm(qkv, self.q_norm, self.k_norm), v
        return self.q_norm(q), self.k_norm(k), v

    def project_out(self, mixed: torch.Tensor) -> torch.Tensor:
        """A ``Mixer``'s output ``[B, N, H, D]`` -> ``[B, N, C]``."""
        return self.proj(mixed.flatten(-2))
