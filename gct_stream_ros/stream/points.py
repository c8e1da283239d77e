"""World points of a z-depth map, as the reference's viewers unproject them."""

from __future__ import annotations

import numpy as np


def depth_to_world_points(depth: np.ndarray, c2w: np.ndarray, intrinsics: np.ndarray,
                          dtype: type = np.float64) -> np.ndarray:
    """``[H, W]`` z-depth -> ``[H, W, 3]`` world points in ``dtype``.

    Pixel ``(u, v)`` sits at integer coordinates (the model's convention, principal point at
    ``(W/2, H/2)`` for its own intrinsics); ``c2w`` is camera-to-world, OpenCV axes.
    """
    height, width = depth.shape
    depth = np.asarray(depth, dtype=dtype)
    # separable rays: one row and one column of directions instead of a full pixel grid
    x = (np.arange(width, dtype=dtype) - intrinsics[0, 2]) / intrinsics[0, 0]
    y = (np.arange(height, dtype=dtype) - intrinsics[1, 2]) / intrinsics[1, 1]
    camera = np.stack(np.broadcast_arrays(x[None, :] * depth, y[:, None] * depth, depth), axis=-1)
    return transform_points(camera, c2w, dtype)


def transform_points(points: np.ndarray, matrix: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """``[..., 3]`` points through a 4x4 rigid or similarity ``matrix``, computed in ``dtype``."""
    matrix = np.asarray(matrix, dtype=dtype)
    # one 2-D product: numpy runs a [..., 3] @ [3, 3] product as many small ones
    flat = np.asarray(points, dtype=dtype).reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
    return flat.reshape(np.shape(points))
