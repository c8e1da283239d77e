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
    c2w, intrinsics = np.asarray(c2w, dtype=dtype), np.asarray(intrinsics, dtype=dtype)
    x = (np.arange(width, dtype=dtype) - intrinsics[0, 2]) / intrinsics[0, 0]  # [W]
    y = (np.arange(height, dtype=dtype) - intrinsics[1, 2]) / intrinsics[1, 1]  # [H]
    # world = depth * R (x, y, 1) + t; R (x, y, 1) is separable in columns and rows, so no [H, W, 3]
    # ray grid and no per-pixel matrix product (numpy runs [N, 3] @ [3, 3] slowly)
    points = np.empty((height, width, 3), dtype=dtype)
    for axis in range(3):
        rotation = c2w[axis, :3]
        direction = (rotation[0] * x)[None, :] + (rotation[1] * y + rotation[2])[:, None]  # [H, W]
        np.multiply(direction, depth, out=points[..., axis])
        points[..., axis] += c2w[axis, 3]
    return points


def transform_points(points: np.ndarray, matrix: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """``[..., 3]`` points through a 4x4 rigid or similarity ``matrix``, computed in ``dtype``."""
    matrix = np.asarray(matrix, dtype=dtype)
    flat = np.asarray(points, dtype=dtype).reshape(-1, 3) @ matrix[:3, :3].T  # one 2-D product
    # one strided add per axis: numpy broadcasts a length-3 vector along the last axis slowly
    for axis in range(3):
        flat[:, axis] += matrix[axis, 3]
    return flat.reshape(np.shape(points))
