"""Rotary position embeddings: 2D (frame blocks) and 3D time/row/column (global blocks).

Angles are computed directly from the token coordinates (no position tables), so there is no
upper bound on a temporal index. The float recipes (fp32 for 2D, float64 for 3D, exponent
forms) follow the reference exactly so that fp32 outputs agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(eq=False)  # identity hashing: torch.compile guards on it, and tensors have no value equality
class Rotation:
    """A rotation of q/k vectors ``[..., N, H, D]`` by per-token angles (``cos``/``sin`` ``[N, 1, *]``)."""

    cos: torch.Tensor
    sin: torch.Tensor
    interleaved: bool
    """True: pairs (2m, 2m+1) (3D RoPE). False: "rotate half" within each half of D (2D RoPE)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        if self.interleaved:
            even, odd = x[..., 0::2], x[..., 1::2]  # [..., D/2] each
            return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)
        return x * cos + _rotate_halves(x) * sin


def _rotate_halves(x: torch.Tensor) -> torch.Tensor:
    """Within each half of D (y half, x half): ``[a, b] -> [-b, a]`` with a, b of D/4 channels."""
    y_a, y_b, x_a, x_b = x.chunk(4, dim=-1)
    return torch.cat((-y_b, y_a, -x_b, x_a), dim=-1)


def frame_positions_2d(grid_h: int, grid_w: int, num_special: int) -> torch.Tensor:
    """(row, col) of every token of a frame ``[P, 2]``: specials at (0, 0), patch (r, c) at (r+1, c+1)."""
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    patches = torch.stack((rows.flatten(), cols.flatten()), dim=-1) + 1
    return torch.cat((torch.zeros(num_special, 2, dtype=torch.long), patches))


def rope_2d(positions: torch.Tensor, head_dim: int, base: float) -> Rotation:
    """2D RoPE: the first half of D rotates with the row, the second with the column.

    positions ``[N, 2]`` (row, col) -> a ``Rotation`` for ``[..., N, H, D]``.
    """
    quarter = head_dim // 4
    half = 2 * quarter
    inv_freq = 1.0 / (base ** (torch.arange(0, half, 2, device=positions.device).float() / half))  # [D/4]
    angles = positions.float()[..., None] * inv_freq  # [N, 2, D/4], fp32 as the reference
    angles = torch.cat((angles, angles), dim=-1).flatten(-2)  # [N, D]: (row, row, col, col) quarters
    return Rotation(angles.cos()[:, None], angles.sin()[:, None], interleaved=False)


def frame_positions_3d(frame_indices: torch.Tensor, grid_h: int, grid_w: int,
                       num_special: int) -> torch.Tensor:
    """(t, h, w) of every token of the given frames ``[S*P, 3]``.

    Special token k of frame t sits at (t, k, k); patch (r, c) at (t, num_special + r, num_special + c),
    so specials and patches never share a spatial coordinate.
    """
    device = frame_indices.device
    special = torch.arange(num_special, device=device)
    rows, cols = torch.meshgrid(torch.arange(grid_h, device=device), torch.arange(grid_w, device=device),
                                indexing="ij")
    spatial = torch.cat((torch.stack((special, special), dim=-1),
                         torch.stack((rows.flatten(), cols.flatten()), dim=-1) + num_special))  # [P, 2]
    time = frame_indices.reshape(-1, 1, 1).expand(-1, spatial.shape[0], 1)  # [S, P, 1]
    return torch.cat((time, spatial.expand(len(frame_indices), -1, -1)), dim=-1).reshape(-1, 3)


def rope_3d(positions: torch.Tensor, split: tuple[int, int, int], theta: float) -> Rotation:
    """3D RoPE on interleaved pairs: the first ``split[0]/2`` pairs rotate with t, then h, then w.

    positions ``[N, 3]`` -> a ``Rotation`` for ``[..., N, H, sum(split)]``; angles in float64.
    """
    angles = []
    for axis, dim in enumerate(split):
        freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim))
        angles.append(positions[:, axis, None].double() * freq)  # [N, dim/2]
    angles = torch.cat(angles, dim=-1)  # [N, D/2]
    return Rotation(angles.cos()[:, None], angles.sin()[:, None], interleaved=True)
