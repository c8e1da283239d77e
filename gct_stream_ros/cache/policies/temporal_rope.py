"""The temporal band of the global blocks' 3D RoPE, to undo it before scoring keys by content.

Cached keys carry their frame's temporal rotation (interleaved pairs 0..9 of the 64 head dims,
pair m rotated by ``t * 10000^(-2m/20)``, as ``model/rope.py`` applies it). Two keys of the same
content from distant frames therefore look different; diversity scores must compare them
without it. The spatial bands (pairs 10..31) are the same for every frame and stay as they are.
"""

from __future__ import annotations

import torch

TEMPORAL_PAIRS = 10
ROPE_BASE = 10000.0


def rotate_temporal(keys: torch.Tensor, frames: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Rotate the temporal pairs of ``keys`` ``[N, H, D]`` by their frame index ``frames`` ``[N, H]``.

    ``inverse=True`` removes the rotation. Returns fp32; angles are computed in float64.
    """
    pair = torch.arange(TEMPORAL_PAIRS, dtype=torch.float64, device=keys.device)
    frequency = ROPE_BASE ** (-2.0 * pair / (2 * TEMPORAL_PAIRS))  # [10]
    angle = frames.to(torch.float64).unsqueeze(-1) * frequency  # [N, H, 10]
    if inverse:
        angle = -angle
    cos, sin = angle.cos().float(), angle.sin().float()
    out = keys.float().clone()
    even, odd = slice(0, 2 * TEMPORAL_PAIRS, 2), slice(1, 2 * TEMPORAL_PAIRS, 2)
    x, y = out[..., even].clone(), out[..., odd].clone()  # [N, H, 10]
    out[..., even], out[..., odd] = x * cos - y * sin, x * sin + y * cos
    return out
