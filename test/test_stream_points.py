"""Back-projection of depth maps and point transforms against a per-pixel homogeneous reference."""

from __future__ import annotations

import numpy as np
import pytest

from gct_stream_ros.stream.points import depth_to_world_points, transform_points


def _similarity(seed: int, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    matrix = np.eye(4)
    matrix[:3, :3] = scale * rotation
    matrix[:3, 3] = rng.normal(size=3)
    return matrix


@pytest.mark.parametrize(("dtype", "tolerance"), [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_depth_back_projects_through_the_intrinsics_and_the_pose(dtype, tolerance):
    height, width = 6, 9
    depth = 1.0 + np.random.default_rng(0).random((height, width))
    intrinsics = np.array([[7.0, 0.0, 4.5], [0.0, 8.0, 3.0], [0.0, 0.0, 1.0]])
    c2w = _similarity(1)
    expected = np.empty((height, width, 3))
    for v in range(height):
        for u in range(width):
            camera = depth[v, u] * np.linalg.solve(intrinsics, [u, v, 1.0])
            expected[v, u] = (c2w @ np.append(camera, 1.0))[:3]
    points = depth_to_world_points(depth.astype(dtype), c2w, intrinsics, dtype)
    assert points.dtype == dtype and points.shape == (height, width, 3)
    np.testing.assert_allclose(points, expected, rtol=tolerance, atol=tolerance)


def test_transform_applies_a_similarity_to_any_leading_shape_and_leaves_the_input_alone():
    points = np.random.default_rng(2).normal(size=(4, 5, 3))
    before = points.copy()
    matrix = _similarity(3, scale=2.5)
    moved = transform_points(points, matrix)
    homogeneous = np.concatenate([points, np.ones((4, 5, 1))], axis=-1) @ matrix.T
    np.testing.assert_allclose(moved, homogeneous[..., :3], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(points, before)
    assert transform_points(points, matrix, np.float32).dtype == np.float32
