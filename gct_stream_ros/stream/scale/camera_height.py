"""Scale from the camera's known height above a flat floor: a robust ground-plane fit per frame.

Each frame's depth is back-projected into the camera's optical frame (x right, y down, z
forward). The floor is searched among the points below the camera as the plane with the most
inliers (RANSAC) whose normal lies within ``floor_max_tilt_deg`` of the camera's down axis (so
walls and the ceiling cannot win; a camera pitched or rolled more than that needs a larger
angle), with inliers within ``INLIER_FRACTION`` of the plane's distance to the camera (the
fit's own unit), then refined by least squares on its inliers. The camera's height in model
units is the plane's distance to the optical centre; the sample is ``camera_height`` over it.
Frames where the floor covers less than ``MIN_FLOOR_FRACTION`` of the sampled points give no
sample (looking at a wall, the floor out of view).

Limits: the floor must be the largest level surface below the camera in view, and flat at the
scale of the view (a ramp or a large table top in front of the camera gives wrong samples, which
the window rejects when they are the minority).
"""

from __future__ import annotations

import math

import numpy as np

from gct_stream_ros.stream.points import depth_to_world_points
from gct_stream_ros.stream.result import FrameResult
from gct_stream_ros.stream.scale.reference import ScaleReference
from gct_stream_ros.stream.scale.source import ScaleSource

MAX_POINTS = 3000
"""Points per frame given to the fit (the depth map is decimated evenly down to this)."""
RANSAC_ITERATIONS = 200
INLIER_FRACTION = 0.03
MIN_FLOOR_FRACTION = 0.05
DOWN_AXIS = 1
"""The camera's down axis in its optical frame: y."""


def camera_frame_points(depth: np.ndarray, intrinsics: np.ndarray, confidence: np.ndarray,
                        min_confidence: float) -> np.ndarray:
    """``[N, 3]`` optical-frame points of the valid, confident pixels, evenly decimated to ``MAX_POINTS``."""
    stride = max(1, math.ceil(math.sqrt(depth.size / MAX_POINTS)))
    depth = np.asarray(depth, dtype=np.float64)[::stride, ::stride]
    keep = np.isfinite(depth) & (depth > 0) & (np.asarray(confidence)[::stride, ::stride] >= min_confidence)
    decimated = intrinsics.copy()
    decimated[:2] /= stride  # pixel (i, j) of the decimated map is pixel (stride i, stride j)
    points = depth_to_world_points(np.where(keep, depth, np.nan), np.eye(4), decimated)
    return points[keep]


def fit_floor(points: np.ndarray, max_tilt_deg: float,
              rng: np.random.Generator) -> tuple[np.ndarray, float] | None:
    """``(unit normal pointing down, distance of the plane from the origin)`` of the floor, or None."""
    below = points[points[:, DOWN_AXIS] > 0]
    if len(below) < 3 or len(below) < MIN_FLOOR_FRACTION * len(points):
        return None
    # All candidate planes at once: three random points each (a repeated point gives no plane).
    a, b, c = (below[rng.integers(0, len(below), RANSAC_ITERATIONS)] for _ in range(3))  # [K, 3] each
    normals = np.cross(b - a, c - a)
    lengths = np.linalg.norm(normals, axis=1)
    plane = lengths > 0
    normals = normals[plane] / lengths[plane, None]
    normals *= np.where(normals[:, DOWN_AXIS] < 0, -1.0, 1.0)[:, None]
    distances = np.einsum("kj,kj->k", normals, a[plane])
    level = (normals[:, DOWN_AXIS] >= math.cos(math.radians(max_tilt_deg))) & (distances > 0)
    if not level.any():
        return None
    normals, distances = normals[level], distances[level]
    # [N, K] point-to-plane distances as three broadcast products: a BLAS product of these thin
    # matrices is several times slower on a loaded machine (its threads contend for the cores).
    offsets = sum(below[:, axis, None] * normals[:, axis] for axis in range(3)) - distances
    inliers = np.abs(offsets) <= INLIER_FRACTION * distances
    best_inliers = inliers[:, np.argmax(inliers.sum(axis=0))]
    if best_inliers.sum() < MIN_FLOOR_FRACTION * len(points):
        return None
    return _least_squares_plane(below[best_inliers])


def _least_squares_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
    centre = points.mean(axis=0)
    normal = np.linalg.svd(points - centre, full_matrices=False)[2][-1]
    if normal[DOWN_AXIS] < 0:
        normal = -normal
    return normal, float(normal @ centre)


class CameraHeightScale(ScaleSource):
    def add(self, result: FrameResult, reference: ScaleReference) -> None:
        points = camera_frame_points(result.depth, result.intrinsics, result.depth_conf,
                                     self.options.min_confidence)
        # Seeded per frame: the same frame always gives the same fit.
        floor = fit_floor(points, self.options.floor_max_tilt_deg, np.random.default_rng(result.index))
        if floor is not None:
            self.samples.add(self.options.camera_height / floor[1])
