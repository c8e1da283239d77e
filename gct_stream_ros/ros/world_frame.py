"""The world frame of a sequence (``map``), the frame the node tracks in it, and its pose in ``map`` and in
the continuous ``odom``.

The session's world is the first camera's optical frame (x right, y down, z forward). The
published world is the tracked frame at that first frame: the robot base through the camera
mount ``base -> camera_optical`` from TF, or the root of the camera's TF tree, or, when nothing
publishes the camera's frames, the camera itself levelled with ROS body axes (x forward, y left,
z up, REP-103), so RViz shows the floor level. ``docs/node.md`` ("Frames and TF") has the diagram.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gct_stream_ros.ros.odom_frame import OdomFrame
from gct_stream_ros.ros.odometry import Twist

OPTICAL_TO_BODY = np.array([
    [0.0, 0.0, 1.0, 0.0],
    [-1.0, 0.0, 0.0, 0.0],
    [0.0, -1.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
])
"""The mount of a camera whose optical frame sits at the base origin: body = R * optical."""


class WorldFrame:
    """Maps session-world poses and points into the published world frame."""

    def __init__(self, mount: np.ndarray | None = None, tracked_frame: str | None = None) -> None:
        """``mount``: 4x4 camera optical frame into ``tracked_frame``; without one the camera itself is
        tracked, levelled by ``OPTICAL_TO_BODY``."""
        if (mount is None) != (tracked_frame is None):
            raise ValueError("a mount needs the frame it is in, and a tracked frame its mount")
        self.mount = OPTICAL_TO_BODY.copy() if mount is None else np.asarray(mount, dtype=np.float64)
        self.tracked_frame = tracked_frame
        """None: the camera frame is tracked."""
        self._mount_inverse = np.linalg.inv(self.mount)

    @property
    def from_session(self) -> np.ndarray:
        """4x4 transform of session-world coordinates into the published world frame."""
        return self.mount

    def camera_pose(self, pose_c2w: np.ndarray) -> np.ndarray:
        """world -> camera optical frame (camera-to-world 4x4)."""
        return self.mount @ pose_c2w

    def base_pose(self, pose_c2w: np.ndarray) -> np.ndarray:
        """world (odom) -> base: the camera pose carried back to the base through the mount."""
        return self.mount @ pose_c2w @ self._mount_inverse


@dataclass(frozen=True)
class TrackedPose:
    """Where the tracked frame is for one estimate."""

    child_frame: str
    in_world: np.ndarray
    """4x4 in the sequence's world frame (``map``)."""
    in_odom: np.ndarray
    """4x4 in ``odom``, continuous across sequences."""
    map_from_odom: np.ndarray
    twist: Twist
    """Of the tracked frame, in itself."""


def tracked_pose(world: WorldFrame, odom: OdomFrame, pose_c2w: np.ndarray, camera_frame: str, stamp_ns: int,
                 first_estimate: bool = True) -> TrackedPose:
    """The pose of what odometry, path and TF follow: the tracked frame of ``world`` (the camera frame when
    it has none). A first estimate moves ``odom`` on; a revision is only expressed in it."""
    if world.tracked_frame is None:
        child_frame, in_world = camera_frame, world.camera_pose(pose_c2w)
    else:
        child_frame, in_world = world.tracked_frame, world.base_pose(pose_c2w)
    in_odom = odom.pose_in_odom(in_world, stamp_ns) if first_estimate else odom.odom_from_world @ in_world
    return TrackedPose(child_frame, in_world, in_odom, odom.map_from_odom, odom.twist)
