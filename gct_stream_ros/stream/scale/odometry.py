"""Scale from the robot's odometry: camera travel in metres over camera travel in model units.

The camera's positions by odometry (metres) and by the model (model units) are compared over
increments: an increment ends once the odometry says the camera moved ``odometry_min_motion``
metres from where the previous one ended, and gives one sample, the ratio of the two straight
distances, weighted by the metric one (long increments are the least noisy). Both distances
are between the same two camera positions, so curved paths need no alignment of the two frames.

Standstill gives no increment. Turning in place moves the camera by its lever arm only, which
the odometry knows solely through the mount; an increment over which the model turned more than
``odometry_max_turn_deg`` is dropped (and a new one starts), so a wrong or missing mount, and
wheel slip while turning, cannot bias the estimate. Slip while driving gives a few wrong ratios
that the window's outlier rejection removes (``ratio_window.py``).
"""

from __future__ import annotations

import math

import numpy as np

from gct_stream_ros.stream.result import FrameResult
from gct_stream_ros.stream.scale.options import ScaleOptions
from gct_stream_ros.stream.scale.reference import ScaleReference
from gct_stream_ros.stream.scale.source import ScaleSource


def rotation_angle_deg(first: np.ndarray, second: np.ndarray) -> float:
    """Angle of the rotation between two [3, 3] (or [4, 4]) orientations, degrees."""
    relative = first[:3, :3].T @ second[:3, :3]
    return math.degrees(math.acos(float(np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0))))


class OdometryScale(ScaleSource):
    def __init__(self, options: ScaleOptions) -> None:
        super().__init__(options)
        self._anchor: tuple[np.ndarray, np.ndarray] | None = None
        """(model c2w, odometry camera pose) where the current increment started."""

    def restart_window(self) -> None:
        super().restart_window()
        self._anchor = None

    def add(self, result: FrameResult, reference: ScaleReference) -> None:
        if reference.camera_pose is None:
            return
        model_pose, metric_pose = np.asarray(result.pose_c2w), np.asarray(reference.camera_pose)
        if not (np.isfinite(model_pose[:3, 3]).all() and np.isfinite(metric_pose[:3, 3]).all()):
            return  # a broken odometry message must not become the anchor of every later increment
        if self._anchor is None:
            self._anchor = (model_pose, metric_pose)
            return
        anchor_model, anchor_metric = self._anchor
        metric_travel = float(np.linalg.norm(metric_pose[:3, 3] - anchor_metric[:3, 3]))
        if metric_travel < self.options.odometry_min_motion:
            return
        self._anchor = (model_pose, metric_pose)
        if rotation_angle_deg(anchor_model, model_pose) > self.options.odometry_max_turn_deg:
            return
        model_travel = float(np.linalg.norm(model_pose[:3, 3] - anchor_model[:3, 3]))
        if model_travel > 0:
            self.samples.add(metric_travel / model_travel, weight=metric_travel)
