"""A ``FrameResult`` in metres: what the node and the offline tool publish once the scale is known."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gct_stream_ros.stream.result import FrameResult


def scale_result(result: FrameResult, scale: float) -> FrameResult:
    """``result`` with its depth, world points and camera position multiplied by ``scale``.

    Intrinsics, confidences, the image and the orientation do not depend on the scale. A scale of
    exactly 1 returns ``result`` itself.
    """
    if scale == 1.0:
        return result
    pose = np.array(result.pose_c2w, dtype=np.float64)
    pose[:3, 3] *= scale
    points = None if result.world_points is None else result.world_points * np.float32(scale)
    return replace(result, pose_c2w=pose, depth=result.depth * np.float32(scale), world_points=points)
