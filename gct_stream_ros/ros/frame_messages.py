"""One road from an engine result to the messages of its frame, with their topics.

The node publishes these messages and the offline tool writes them into a bag, so both decide
the same way which frame a cloud is in, which pose odometry and path follow and what goes
into the fused map. Conversions of single messages are in ``messages.py``; this module
chooses and combines them, like depth_image_proc keeps its conversions apart from its nodes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry

from gct_stream_ros.ros import messages, topics
from gct_stream_ros.ros.map_state import MapState
from gct_stream_ros.ros.odom_frame import OdomFrame
from gct_stream_ros.ros.options import NodeOptions
from gct_stream_ros.ros.tf import frame_transforms
from gct_stream_ros.ros.type_support import load_type_support
from gct_stream_ros.ros.world_frame import TrackedPose, WorldFrame, tracked_pose
from gct_stream_ros.stream.result import FrameResult


def load_message_type_support() -> None:
    """Import the C type support of every message this module builds (``type_support.py``): for a caller
    that serializes them on another thread, before that thread starts."""
    load_type_support(messages.BUILT_TYPES)


def every_topic(_topic: str) -> bool:
    return True


@dataclass
class FrameMessages:
    """What one estimate of a frame turns into."""

    transforms: list[TransformStamped]
    """For ``/tf``; empty for a revision (TF keeps the first estimate, as the trajectory does)."""
    outputs: Iterator[tuple[str, object]]
    """``(topic, message)`` of the per-frame outputs, each built only when it is taken."""


def frame_messages(result: FrameResult, camera_frame: str, world: WorldFrame, odom: OdomFrame,
                   options: NodeOptions, map_state: MapState, first_estimate: bool = True,
                   wanted: Callable[[str], bool] = every_topic) -> FrameMessages:
    """The messages of one estimate; a first estimate is also added to ``map_state`` (before any message
    is built, so whoever sees the frame finds it in the map and trajectory) and moves ``odom`` on.

    ``first_estimate`` is False for a window-overlap revision of a frame already recorded: it republishes
    the per-frame outputs but adds nothing to the map, the trajectory, the path or TF. ``wanted(topic)``
    says whether anyone listens: nothing is computed for a topic nobody does.
    """
    world_frame = options.world_frame
    tracked = tracked_pose(world, odom, result.pose_c2w, camera_frame, result.stamp_ns, first_estimate)
    # Map-side outputs are in map, or in odom when no map is published (docs/node.md, "Frames and TF").
    output_from_world = np.eye(4) if options.publishes_map else odom.odom_from_world
    output_from_session = output_from_world @ world.from_session
    # A keyframe's map points and its cloud are the same pixels: selected once (decimation, confidence,
    # finiteness: about 2 ms per frame at 504x378), transformed into each one's frame
    selected = functools.cache(lambda: selected_points(result, options))
    transforms = []
    if first_estimate:
        pose = output_from_world @ tracked.in_world
        points = messages.transformed(selected(), output_from_session) if result.keyframe else None
        map_state.add_frame(result.index, result.stamp_ns, pose,
                            messages.pose_stamped(pose, result.stamp_ns, world_frame), points)
        transforms = frame_transforms(options.frames, options.tf, camera_frame, world, result.pose_c2w,
                                      tracked, result.stamp_ns)
    outputs = _outputs(result, camera_frame, output_from_session, options, tracked, selected,
                       map_state if first_estimate else None, wanted)
    return FrameMessages(transforms, outputs)


def selected_points(result: FrameResult, options: NodeOptions) -> tuple[np.ndarray, np.ndarray]:
    """The cloud's points of a result in the session world, as ``output.points.*`` asks (decimation,
    confidence threshold)."""
    return messages.selected_points(result, options.output.points_decimation,
                                    options.output.points_min_confidence)


def map_message(xyz: np.ndarray, rgb: np.ndarray, stamp_ns: int, options: NodeOptions) -> tuple[str, object]:
    """``(topic, message)`` of the fused map."""
    return topics.MAP, messages.point_cloud(xyz, rgb, stamp_ns, options.world_frame)


def _outputs(result: FrameResult, camera_frame: str, output_from_session: np.ndarray,
             options: NodeOptions, tracked: TrackedPose,
             selected: Callable[[], tuple[np.ndarray, np.ndarray]], recorded_in: MapState | None,
             wanted: Callable[[str], bool]) -> Iterator[tuple[str, object]]:
    """``recorded_in``: the map state holding this frame's path entry; None for a revision (no path)."""
    stamp = result.stamp_ns
    world_frame = options.world_frame
    if wanted(topics.DEPTH):
        yield topics.DEPTH, messages.depth_image(result, camera_frame, options.output.depth_encoding)
    if wanted(topics.CAMERA_INFO):
        yield topics.CAMERA_INFO, messages.camera_info(result, camera_frame)
    if wanted(topics.CONFIDENCE):
        yield topics.CONFIDENCE, messages.confidence_image(result, camera_frame)
    if wanted(topics.POINTS):
        if options.output.points_frame == "map":
            cloud_frame, from_session = world_frame, output_from_session
        else:
            cloud_frame, from_session = camera_frame, np.linalg.inv(result.pose_c2w)
        xyz, rgb = messages.transformed(selected(), from_session)
        yield topics.POINTS, messages.point_cloud(xyz, rgb, stamp, cloud_frame)
    if wanted(topics.ODOMETRY):
        yield topics.ODOMETRY, odometry_message(tracked, stamp, options)
    if recorded_in is not None and wanted(topics.PATH):
        yield topics.PATH, messages.path(recorded_in.path(), stamp, world_frame)


def odometry_message(tracked: TrackedPose, stamp_ns: int, options: NodeOptions) -> Odometry:
    """``odometry``: the tracked frame in odom (in map when no odom -> base is published), its twist in
    itself, the covariances of ``odometry.*``."""
    pose = tracked.in_odom if options.tf.publish_odom_to_base else tracked.in_world
    covariance = options.odometry
    return messages.odometry(pose, stamp_ns, options.odometry_frame, tracked.child_frame, covariance.pose,
                             tracked.twist.linear, tracked.twist.angular, covariance.twist)
