"""World points of a z-depth map, as the reference's viewers unproject them."""

from __future__ import annotations

import numpy as np


def depth_to_world_points(depth: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """``[H, W]`` z-depth -> ``[H, W, 3]`` float64 world points.

    Pixel ``(u, v)`` sits at integer coordinates (the model's convention, principal point at
    ``(W/2, H/2)`` for its own intrinsics); ``c2w`` is camera-to-world, OpenCV axes.
    """
    v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]].astype(np.float64)
    rays = np.stack([(u - intrinsics[0, 2]) / intrinsics[0, 0], (v - intrinsics[1, 2]) / intrinsics[1, 1],
                     np.ones_like(u)], axis=-1)
    return (rays * depth[..., None]) @ np.asarray(c2w)[:3, :3].T + np.asarray(c2w)[:3, 3]
