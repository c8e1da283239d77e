"""The scale sources' data in a bag, for the offline tool: an odometry topic and an aligned depth topic.

Odometry (``nav_msgs/Odometry``) is small and read whole at the start, so any stamp can be
looked up; depth images are large and read lazily, in stamp order, as the results ask for
stamps that only grow (a few recent images are kept for results that come out together).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gct_stream_ros.ros.depth_decode import depth_in_metres
from gct_stream_ros.ros.image_decode import ImageDecodeError
from gct_stream_ros.ros.scale_inputs import DEPTH_BUFFER, pose_matrix
from gct_stream_ros.stamps import NS_PER_S
from gct_stream_ros.stream.scale.options import ScaleOptions
from gct_stream_ros.stream.scale.reference import ScaleReference
from gct_stream_ros.stream.scale.stamped import PoseBuffer, StampedBuffer
from gct_stream_ros.tools.frame_source import InputError, open_bag, stamp_of

ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
IMAGE_TYPE = "sensor_msgs/msg/Image"


def _topic_connections(reader: object, path: Path, topic: str, msgtype: str) -> list:
    connections = [c for c in reader.connections if c.topic == topic]
    if not connections:
        topics = ", ".join(sorted({c.topic for c in reader.connections if c.msgtype == msgtype})) or "none"
        raise InputError(f"{path} has no topic {topic}; its {msgtype} topics: {topics}")
    if any(c.msgtype != msgtype for c in connections):
        raise InputError(f"{topic} in {path} is a {connections[0].msgtype}, not a {msgtype}")
    return connections


def read_odometry(path: Path, topic: str) -> PoseBuffer:
    """Every odometry pose of ``topic`` (base in the odometry frame), by stamp."""
    reader = open_bag(path)
    try:
        connections = _topic_connections(reader, path, topic, ODOMETRY_TYPE)
        poses = PoseBuffer(capacity=max(1, sum(c.msgcount for c in connections)))
        for connection, recorded_ns, raw in reader.messages(connections=connections):
            message = reader.deserialize(raw, connection.msgtype)
            poses.add(stamp_of(message, recorded_ns), pose_matrix(message.pose.pose))
    finally:
        reader.close()
    if not len(poses):
        raise InputError(f"{topic} in {path} holds no messages")
    return poses


class BagDepth:
    """The depth images of ``topic`` in metres, matched to growing stamps."""

    def __init__(self, path: Path, topic: str) -> None:
        reader = open_bag(path)
        try:
            _topic_connections(reader, path, topic, IMAGE_TYPE)
        finally:
            reader.close()
        self.path, self.topic = path, topic
        self.rejected = 0
        self._images: StampedBuffer[np.ndarray] = StampedBuffer(DEPTH_BUFFER)
        self._stream = self._read()
        self._next: tuple[int, np.ndarray] | None = next(self._stream, None)

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        while self._next is not None and self._next[0] <= stamp_ns + tolerance_ns:
            self._images.add(*self._next)
            self._next = next(self._stream, None)
        return self._images.nearest(stamp_ns, tolerance_ns)

    def _read(self) -> Iterator[tuple[int, np.ndarray]]:
        reader = open_bag(self.path)
        try:
            connections = [c for c in reader.connections if c.topic == self.topic]
            for connection, recorded_ns, raw in reader.messages(connections=connections):
                message = reader.deserialize(raw, connection.msgtype)
                try:
                    yield stamp_of(message, recorded_ns), depth_in_metres(message)
                except ImageDecodeError:
                    self.rejected += 1
        finally:
            reader.close()


class BagScaleInputs:
    """What the scale source measured at each image stamp, from the bag's odometry or depth topic.

    The offline tool has no TF: the odometry's base is taken as the camera position (the camera at
    the base origin, as the offline world frame assumes too).
    """

    def __init__(self, path: Path, options: ScaleOptions, odometry_topic: str | None = None,
                 depth_topic: str | None = None) -> None:
        self.options = options
        self._tolerance_ns = round(options.sync_tolerance_s * NS_PER_S)
        self._odometry = self._depth = None
        self.description = options.source
        if options.source == "odometry":
            if odometry_topic is None:
                raise InputError("scale.source odometry needs --odometry-topic (a nav_msgs/Odometry topic of "
                                 "the bag; odometry from /tf is not read offline)")
            self._odometry = read_odometry(path, odometry_topic)
            self.description = f"odometry from {odometry_topic}"
        elif options.source == "depth":
            if depth_topic is None:
                raise InputError("scale.source depth needs --depth-topic")
            self._depth = BagDepth(path, depth_topic)
            self.description = f"depth from {depth_topic}"

    def reference(self, stamp_ns: int, input_hw: tuple[int, int]) -> ScaleReference:
        if self._odometry is not None:
            return ScaleReference(camera_pose=self._odometry.at(stamp_ns, self._tolerance_ns))
        if self._depth is not None:
            return ScaleReference(depth=self._depth.nearest(stamp_ns, self._tolerance_ns), input_hw=input_hw)
        return ScaleReference()
