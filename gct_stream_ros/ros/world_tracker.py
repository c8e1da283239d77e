"""Which world frame each result goes into, and which of its transforms the node may send.

A world frame (``WorldFrame``: ``map`` and the frame tracked in it) lasts one sequence of the
session; it also restarts when the camera mount appears on TF while it was assumed. ``odom`` goes
on across every restart (``odom_frame.py``), so the jump goes to ``map -> odom``. The tracked frame
and its mount come from ``mount.py``; a transform whose child already has another parent on TF is
held back (``tf_tree.py``). The diagram is in docs/node.md, "Frames and TF".
"""

from __future__ import annotations

from geometry_msgs.msg import TransformStamped
from rclpy.impl.rcutils_logger import RcutilsLogger

from gct_stream_ros.ros.map_state import MapState
from gct_stream_ros.ros.mount import Mount, MountResolver
from gct_stream_ros.ros.odom_frame import OdomFrame
from gct_stream_ros.ros.options import FrameNames, TfOptions
from gct_stream_ros.ros.tf_tree import TfTree
from gct_stream_ros.ros.world_frame import WorldFrame
from gct_stream_ros.stream.result import FrameResult

MOUNT_WARNING_PERIOD_S = 30.0


class WorldTracker:
    """The world frames of the node's worker thread, one after the other, with ``odom`` across them."""

    def __init__(self, mounts: MountResolver, tree: TfTree, map_state: MapState,
                 logger: RcutilsLogger) -> None:
        self._mounts, self._tree, self._map_state, self._logger = mounts, tree, map_state, logger
        self.odom = OdomFrame()
        self.world: WorldFrame | None = None
        self._mount: Mount | None = None
        self._sequence: int | None = None
        self._is_new = False
        """The next first estimate is the first of a new world frame (where odom anchors it)."""
        self._restart_reason = ""
        """Why the world frame restarted since ``take_restart_reason`` was last called."""

    def stop_waiting(self) -> None:
        """The node is shutting down: a wait for the camera mount ends now."""
        self._mounts.cancel()

    def restart(self, reason: str) -> None:
        """The session was reset: the next result starts a new world frame; map and path start again."""
        self._map_state.restart()
        self.world = None
        self._sequence = None
        self._restart_reason = reason

    def take_restart_reason(self) -> str:
        """Why the world frame restarted since the last call ('' when it did not, or after a failed step)."""
        reason, self._restart_reason = self._restart_reason, ""
        return reason

    def world_for(self, result: FrameResult, camera_frame: str, frames: FrameNames,
                  tf: TfOptions) -> WorldFrame:
        """The world frame of ``result``; a new sequence (input size change) or a camera mount that appears on
        TF starts a new one."""
        if self.world is not None and result.sequence == self._sequence and not self._mount_changed(
                camera_frame, frames):
            return self.world
        if self._sequence is not None and result.sequence != self._sequence:
            self._logger.warning(f"new sequence {result.sequence} (input size changed): map and path restart")
            self._restart_reason = "input size changed"
        if self.world is not None:
            self._map_state.restart()
        self._mount = None
        if tf.publish_odom_to_base:
            self._mount = self._mounts.resolve(frames.base, camera_frame, (frames.map, frames.odom))
            self._warn_if_assumed(self._mount, frames)
        if self._mount is None or self._mount.tracked_from_camera is None:
            self.world = WorldFrame()
        else:
            self.world = WorldFrame(self._mount.tracked_from_camera, self._mount.tracked_frame)
        self._sequence = result.sequence
        self.odom.start_sequence()
        self._is_new = True
        return self.world

    def sendable(self, transforms: list[TransformStamped], tf: TfOptions) -> list[TransformStamped]:
        """The transforms of a first estimate that may go on ``/tf``: none whose child already has another
        parent (said once each). The first estimate of a new world frame also says where its jump went
        when ``map -> odom`` is not published."""
        if self._is_new:
            self._is_new = False
            if not tf.publish_map_to_odom and self.odom.last_jump:
                self._logger.info(f"new world frame: odom continues from the last pose; map -> odom jumped "
                                  f"{self.odom.last_jump:.3f} (not published: tf.publish_map_to_odom is "
                                  f"false)")
        edges = [(t.header.frame_id, t.child_frame_id) for t in transforms]
        self._tree.claim(edges)
        kept = []
        for transform, (parent, child) in zip(transforms, edges, strict=True):
            other = self._tree.other_parent(parent, child)
            if other is None:
                kept.append(transform)
            elif self._tree.report_once((parent, child)):
                self._logger.error(
                    f"not publishing {parent} -> {child}: {child} already has the parent {other} on TF, and "
                    f"a frame has one parent (set frames.* or turn the tf.publish_* switch off)")
        return kept

    def _mount_changed(self, camera_frame: str, frames: FrameNames) -> bool:
        """While the mount is assumed, look for it again; True when TF now gives another one (new world)."""
        if self._mount is None or self._mount.found:
            return False
        mount = self._mounts.resolve(frames.base, camera_frame, (frames.map, frames.odom))
        if mount.tracked_frame == self._mount.tracked_frame:
            self._warn_if_assumed(mount, frames)
            return False
        self._logger.info(f"camera mount {mount.tracked_frame} -> {camera_frame} found on TF: tracking "
                          f"{mount.tracked_frame} from now on (new map; odom continues)")
        return True

    def _warn_if_assumed(self, mount: Mount, frames: FrameNames) -> None:
        if not mount.found:
            self._logger.warning(
                f"no TF {frames.base} -> {mount.camera_frame} after {self._mounts.timeout_s:g} s "
                f"(tf.mount_timeout): tracking {mount.tracked_frame}, the root of the camera's TF tree, as "
                f"the base; still looking", throttle_duration_sec=MOUNT_WARNING_PERIOD_S)
