"""``odom`` stays continuous across sequences; the jump of a new sequence goes to ``map -> odom`` (REP-105).

Each sequence (after a reset, a stamp going backwards, an input size change or a failed step) has
its own world frame: the tracked frame at its first estimate, which is where ``map`` is while that
sequence runs. Were ``odom`` that world frame too, ``odom -> base_link`` would return to identity on
every reset, and an EKF fusing it would see the robot teleport. Instead ``odom`` is anchored once:
at a new sequence, ``odom_from_world`` is chosen so that the first pose of the new sequence equals
the last pose published in ``odom``. ``map -> odom`` is the inverse of that anchor, so the camera's
pose in ``map`` is the new sequence's estimate, and ``map -> odom -> base`` composes to it.
"""

from __future__ import annotations

import numpy as np

from gct_stream_ros.ros.odometry import ZERO_TWIST, Twist, TwistTracker


class OdomFrame:
    """Poses in the current sequence's world frame turned into continuous poses in ``odom``, and the twist
    between consecutive ones."""

    def __init__(self) -> None:
        self.odom_from_world = np.eye(4)
        """4x4: the current sequence's world (``map``) coordinates into ``odom``."""
        self._last_in_odom: np.ndarray | None = None
        self._anchored = False
        self.last_jump = 0.0
        """World units between the first pose of the latest sequence as estimated and where odom continues
        it: the jump that ``map -> odom`` took instead of ``odom -> base``."""
        self._twists = TwistTracker()
        self.twist: Twist = ZERO_TWIST
        """Of the latest pose, in its own (child) frame."""

    def start_sequence(self) -> None:
        """The next pose is the first of a new world frame: it will continue from the last one in odom."""
        self._anchored = False

    def pose_in_odom(self, pose_in_world: np.ndarray, stamp_ns: int) -> np.ndarray:
        """The tracked frame's pose in ``odom`` (4x4) for its pose in the current world frame at ``stamp_ns``;
        the first pose of a sequence anchors the sequence where the previous one ended."""
        pose_in_world = np.asarray(pose_in_world, dtype=np.float64)
        if not self._anchored:
            if self._last_in_odom is not None:
                unanchored = self.odom_from_world @ pose_in_world
                self.last_jump = float(np.linalg.norm(unanchored[:3, 3] - self._last_in_odom[:3, 3]))
                self.odom_from_world = self._last_in_odom @ np.linalg.inv(pose_in_world)
            self._anchored = True
        self._last_in_odom = self.odom_from_world @ pose_in_world
        self.twist = self._twists.update(self._last_in_odom, stamp_ns)
        return self._last_in_odom

    @property
    def map_from_odom(self) -> np.ndarray:
        """4x4 ``map -> odom``: identity until the first new sequence, then the accumulated jumps."""
        return np.linalg.inv(self.odom_from_world)
