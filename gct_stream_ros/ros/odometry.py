"""What ``odometry`` says beyond the pose: an honest covariance and the twist.

A covariance of zeros tells an EKF (robot_localization) that the pose is exact, and it will trust
it over every other sensor. The model gives no per-frame uncertainty, so the covariance is
diagonal, from parameters whose defaults follow the accuracy reported for streaming
reconstruction models (``docs/node.md``, "Odometry"). The twist is the motion between the two
latest poses over their stamp difference, in the child frame (``nav_msgs/Odometry``'s convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gct_stream_ros.mapping.quaternion import quaternion_from_matrix
from gct_stream_ros.stamps import NS_PER_S


@dataclass(frozen=True)
class OdometryCovariance:
    """Standard deviations of the pose (in the parent frame) and of the twist (in the child frame)."""

    position_stddev: float
    """World units."""
    orientation_stddev: float
    """Radians, about each axis."""
    linear_velocity_stddev: float
    """World units per second."""
    angular_velocity_stddev: float
    """Radians per second."""

    @property
    def pose(self) -> list[float]:
        """Row-major 6x6 (x, y, z, rotation about x, y, z) of ``geometry_msgs/PoseWithCovariance``."""
        return _diagonal(self.position_stddev, self.orientation_stddev)

    @property
    def twist(self) -> list[float]:
        """Row-major 6x6 (vx, vy, vz, wx, wy, wz) of ``geometry_msgs/TwistWithCovariance``."""
        return _diagonal(self.linear_velocity_stddev, self.angular_velocity_stddev)


def _diagonal(linear_stddev: float, angular_stddev: float) -> list[float]:
    return np.diag([linear_stddev ** 2] * 3 + [angular_stddev ** 2] * 3).reshape(-1).tolist()


@dataclass(frozen=True)
class Twist:
    """Linear (world units / s) and angular (rad / s) velocity of the child frame, in the child frame."""

    linear: np.ndarray
    angular: np.ndarray


ZERO_TWIST = Twist(np.zeros(3), np.zeros(3))


def twist_between(previous: np.ndarray, current: np.ndarray, elapsed_ns: int) -> Twist:
    """The constant velocity that moves the child from ``previous`` to ``current`` (both 4x4 poses in the
    same parent frame) in ``elapsed_ns``, expressed in the child frame at ``current``; zero when no time
    passed (e.g. the first pose, or a stamp repeated)."""
    if elapsed_ns <= 0:
        return ZERO_TWIST
    seconds = elapsed_ns / NS_PER_S
    rotation = np.asarray(current)[:3, :3]
    displacement = np.asarray(current)[:3, 3] - np.asarray(previous)[:3, 3]
    relative = np.asarray(previous)[:3, :3].T @ rotation  # previous child -> current child
    return Twist(rotation.T @ displacement / seconds, _rotation_vector(relative) / seconds)


def _rotation_vector(rotation: np.ndarray) -> np.ndarray:
    """Axis times angle (radians) of a 3x3 rotation; the axis is the same in both frames it relates."""
    x, y, z, w = quaternion_from_matrix(rotation)
    vector = np.array([x, y, z])
    sine = np.linalg.norm(vector)
    if sine < 1e-12:
        return 2.0 * vector  # small angles: angle ~ 2 sin(angle / 2)
    return vector / sine * 2.0 * np.arctan2(sine, w)


class TwistTracker:
    """The twist of each new pose from the one before it (poses in one continuous frame: ``odom``)."""

    def __init__(self) -> None:
        self._previous: tuple[int, np.ndarray] | None = None

    def update(self, pose: np.ndarray, stamp_ns: int) -> Twist:
        previous, self._previous = self._previous, (stamp_ns, np.asarray(pose, dtype=np.float64))
        if previous is None:
            return ZERO_TWIST
        return twist_between(previous[1], pose, stamp_ns - previous[0])
