"""Sine/cosine embedding of normalised image coordinates, added to the DPT feature maps.

Coordinates span the image plane scaled by its diagonal (so the embedding depends on the aspect
ratio, not on the feature-map size); the float recipe follows the reference (fp32 grid, float64
frequencies and trigonometry).
"""

from __future__ import annotations

import torch

FREQUENCY_BASE = 100.0


def uv_sincos_embedding(channels: int, height: int, width: int, aspect: float,
                        device: torch.device | None = None) -> torch.Tensor:
    """``[channels, height, width]`` fp32: ``[sin(u w), cos(u w), sin(v w), cos(v w)]`` per pixel."""
    diagonal = (aspect**2 + 1.0) ** 0.5
    span_u, span_v = aspect / diagonal, 1.0 / diagonal
    u = torch.linspace(-span_u * (width - 1) / width, span_u * (width - 1) / width, width, device=device)
    v = torch.linspace(-span_v * (height - 1) / height, span_v * (height - 1) / height, height, device=device)
    quarter = channels // 4
    omega = torch.arange(quarter, dtype=torch.float64, device=device)
    omega /= quarter
    omega = 1.0 / FREQUENCY_BASE**omega  # [C/4]
    u_angles = u[None, :, None].double() * omega  # [1, w, C/4]
    v_angles = v[:, None, None].double() * omega  # [h, 1, C/4]
    u_part = torch.cat((u_angles.sin(), u_angles.cos()), dim=-1).expand(height, -1, -1)  # [h, w, C/2]
    v_part = torch.cat((v_angles.sin(), v_angles.cos()), dim=-1).expand(-1, width, -1)
    embedding = torch.cat((u_part, v_part), dim=-1)  # [h, w, C]
    return embedding.float().permute(2, 0, 1)
