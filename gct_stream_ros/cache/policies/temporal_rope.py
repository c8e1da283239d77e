"""The temporal band of the global blocks' 3D RoPE, to undo it before scoring keys by content.

Cached keys carry their frame's temporal rotation (interleaved pairs 0..9 of the 64 head dims,
pair m rotated by ``t * 10000^(-2m/20)``, as ``model/rope.py`` applies it). Two keys of the same
content from distant frames therefore look different; diversity scores must compare them
without it. The spatial bands (pairs 10..31) are the same for every frame and stay as they are.
Angles are computed in fp32: for frame indices up to ~10^4 they are off by < 1e-3 rad.
"""

from __future__ import annotations

import torch

TEMPORAL_PAIRS = 10
TEMPORAL_DIMS = 2 * TEMPORAL_PAIRS
ROPE_BASE = 10000.0


def rope_frequencies(device: torch.device) -> torch.Tensor:
    """The temporal band's angular frequency per pair ``[10]`` fp32 (pair m: ``10000^(-2m/20)``)."""
    pair = torch.arange(TEMPORAL_PAIRS, dtype=torch.float32, device=device)
    return ROPE_BASE ** (-2.0 * pair / TEMPORAL_DIMS)


def temporal_band(keys: torch.Tensor, frames: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """The temporal dims of ``keys`` ``[N, H, D]`` rotated by ``frames`` ``[N, H]``: ``[N, H, 20]`` fp32.

    ``inverse=True`` removes the rotation. Only the 20 temporal dims are read and converted.
    """
    angle = frames.float().unsqueeze(-1) * rope_frequencies(keys.device)  # [N, H, 10]
    if inverse:
        angle = -angle
    cos, sin = angle.cos(), angle.sin()
    x, y = keys[..., 0:TEMPORAL_DIMS:2].float(), keys[..., 1:TEMPORAL_DIMS:2].float()  # [N, H, 10]
    return torch.stack([x * cos - y * sin, x * sin + y * cos], dim=-1).flatten(-2)


def rotate_temporal(keys: torch.Tensor, frames: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """``keys`` ``[N, H, D]`` with the temporal band rotated (``temporal_band``), fp32."""
    return torch.cat([temporal_band(keys, frames, inverse), keys[..., TEMPORAL_DIMS:].float()], dim=-1)
