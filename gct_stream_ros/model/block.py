"""Pre-norm transformer block with LayerScale (DINO, aggregator and camera-head trunks)."""

from __future__ import annotations

import torch
from torch import nn

from gct_stream_ros.model.attention import Attention, Mixer, self_attention
from gct_stream_ros.model.layer_scale import LayerScale
from gct_stream_ros.model.mlp import Mlp


class Block(nn.Module):
    """``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False,
                 norm_eps: float = 1e-5, init_values: float = 1.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, norm_eps=norm_eps)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(self, x: torch.Tensor, mix: Mixer = self_attention) -> torch.Tensor:
        """``[B, N, C]`` -> ``[B, N, C]``; ``mix`` decides what the tokens attend to."""
        return self.finish(x, mix(*self.attention_inputs(x)))

    # The two halves of forward, for callers that run the token mixing elsewhere (the global
    # blocks' KV cache sits between two compiled regions of fixed shape).

    def attention_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, N, C]`` -> q, k (normalised, not rotated), v ``[B, N, H, D]``."""
        return self.attn.project_in(self.norm1(x))

    def finish(self, x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
        """The block's output from its input ``x`` and the mixed values ``[B, N, H, D]``."""
        x = x + self.ls1(self.attn.project_out(mixed))
        return x + self.ls2(self.mlp(self.norm2(x)))
