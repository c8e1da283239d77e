"""The published world frame (map, or odom) and how session estimates are expressed in it.

The session's world is the first camera's optical frame (x right, y down, z forward). The
published world is the robot base at that first frame, with ROS body axes (x forward, y left,
z up, REP-103), so RViz shows the floor level and a camera-only setup gets the usual tree
``map -> camera_optical``. With a robot the camera mount ``base -> camera_optical`` (from TF)
relates the two; without one the camera is taken as the base with the standard optical
rotation.
"""

from __future__ import annotations

import numpy as np

from gct_stream_ros.ros.options import FrameNames, TfOptions

OPTICAL_TO_BODY = np.array([
    [0.0, 0.0, 1.0, 0.0],
    [-1.0, 0.0, 0.0, 0.0],
    [0.0, -1.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
])
"""The mount of a camera whose optical frame sits at the base origin: body = R * optical."""


class WorldFrame:
    """Maps session-world poses and points into the published world frame."""

    def __init__(self, mount: np.ndarray | None = None) -> None:
        self.mount = OPTICAL_TO_BODY.copy() if mount is None else np.asarray(mount, dtype=np.float64)
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


def tracked_pose(frames: FrameNames, tf: TfOptions, world: WorldFrame, pose_c2w: np.ndarray,
                 camera_frame: str) -> tuple[str, np.ndarray]:
    """``(child frame, pose in the world frame)`` of what odometry and path follow: the base when we publish
    odom -> base, the camera optical frame otherwise."""
    if tf.publish_odom_to_base:
        return frames.base, world.base_pose(pose_c2w)
    return camera_frame, world.camera_pose(pose_c2w)
