"""The node's feed of the metric-scale source: odometry (TF or a topic) and an aligned depth topic.

Messages arrive on the executor thread and are kept by stamp (``stream/scale/stamped.py``); the
worker asks for what was measured at each result's stamp. Odometry:

- ``scale.odometry.input: tf``: the camera optical frame in ``frames.odom`` at the image's
  stamp, from the node's TF listener (``tf_listener.py``; the robot's odometry and its description
  give the mount). Needs ``tf2_ros``'s interpolating buffer; without it the source gets nothing and
  says so once.
- ``scale.odometry.input: topic``: ``nav_msgs/Odometry`` on ``scale/odometry`` (remap it to the
  robot's odometry), carried from its ``child_frame_id`` (or ``frames.base``) to the camera by
  the mount from TF; without a mount the camera is taken to sit at the base origin, which is
  exact for straight driving (increments over which the robot turns much are ignored anyway).

Depth: ``sensor_msgs/Image`` on ``scale/depth`` (32FC1 metres or 16UC1 millimetres, registered
to the colour image), the nearest one within ``scale.sync_tolerance`` of the image's stamp.
"""

from __future__ import annotations

import threading

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from gct_stream_ros.mapping.quaternion import matrix_from_quaternion
from gct_stream_ros.ros import messages, topics
from gct_stream_ros.ros.depth_decode import depth_in_metres
from gct_stream_ros.ros.image_decode import ImageDecodeError
from gct_stream_ros.ros.tf_listener import TfListener
from gct_stream_ros.stamps import NS_PER_S
from gct_stream_ros.stream.scale.options import ScaleOptions
from gct_stream_ros.stream.scale.reference import ScaleReference
from gct_stream_ros.stream.scale.stamped import PoseBuffer, StampedBuffer

ODOMETRY_BUFFER = 10_000
"""Odometry messages kept (100 s at 100 Hz): results come out well within that of their images."""
DEPTH_BUFFER = 64
"""Depth images kept (2 s at 30 Hz: the scale phase and the queue delay results by a few frames)."""
WARNING_PERIOD_S = 10.0


def pose_matrix(pose: object) -> np.ndarray:
    """4x4 of a ``geometry_msgs/Pose``."""
    matrix = np.eye(4)
    q = pose.orientation
    matrix[:3, :3] = matrix_from_quaternion(np.array([q.x, q.y, q.z, q.w]))
    matrix[:3, 3] = (pose.position.x, pose.position.y, pose.position.z)
    return matrix


class ScaleInputs:
    def __init__(self, node: Node, options: ScaleOptions, odom_frame: str, base_frame: str,
                 tf: TfListener) -> None:
        self._node = node
        self._options = options
        self._odom_frame = odom_frame
        self._base_frame = base_frame
        self._tf = tf
        self._tolerance_ns = round(options.sync_tolerance_s * NS_PER_S)
        self._lock = threading.Lock()
        self._odometry = PoseBuffer(ODOMETRY_BUFFER)
        self._depth: StampedBuffer[np.ndarray] = StampedBuffer(DEPTH_BUFFER)
        self._odometry_child = ""
        """The child frame of the latest odometry message (the base it tracks)."""
        self._odometry_from_tf = False
        self.description = ""
        """What feeds the source, for the start-up log."""
        if options.source == "odometry" and options.odometry_input == "topic":
            node.create_subscription(Odometry, topics.SCALE_ODOMETRY, self._on_odometry, 100)
            self.description = f"odometry from {node.resolve_topic_name(topics.SCALE_ODOMETRY)}"
        elif options.source == "odometry":
            self._odometry_from_tf = tf.interpolates
            self.description = f"odometry from TF {odom_frame} -> camera"
            if not self._odometry_from_tf:
                self.description += " (tf2_ros missing: no odometry; use scale.odometry.input:=topic)"
                node.get_logger().warning("scale.source odometry with scale.odometry.input tf needs tf2_ros, "
                                          "which cannot be imported: no scale estimate (use "
                                          "scale.odometry.input:=topic and remap scale/odometry)")
        elif options.source == "depth":
            node.create_subscription(Image, topics.SCALE_DEPTH, self._on_depth, qos_profile_sensor_data)
            self.description = f"depth from {node.resolve_topic_name(topics.SCALE_DEPTH)}"

    def reference(self, stamp_ns: int, camera_frame: str, input_hw: tuple[int, int]) -> ScaleReference:
        """What the source measured at ``stamp_ns`` (an image's stamp); empty fields when nothing matches."""
        if self._options.source == "depth":
            with self._lock:
                depth = self._depth.nearest(stamp_ns, self._tolerance_ns)
            return ScaleReference(depth=depth, input_hw=input_hw)
        if self._options.source == "odometry":
            return ScaleReference(camera_pose=self._camera_in_odometry(stamp_ns, camera_frame))
        return ScaleReference()

    def _camera_in_odometry(self, stamp_ns: int, camera_frame: str) -> np.ndarray | None:
        if self._odometry_from_tf:
            return self._tf.lookup(self._odom_frame, camera_frame, stamp_ns)
        with self._lock:
            base = self._odometry.at(stamp_ns, self._tolerance_ns)
            base_frame = self._odometry_child or self._base_frame
        if base is None:
            return None
        mount = self._tf.lookup(base_frame, camera_frame)
        return base if mount is None else base @ mount

    def _on_odometry(self, message: Odometry) -> None:
        with self._lock:
            self._odometry.add(messages.to_nanoseconds(message.header.stamp), pose_matrix(message.pose.pose))
            self._odometry_child = message.child_frame_id

    def _on_depth(self, message: Image) -> None:
        try:
            depth = depth_in_metres(message)
        except ImageDecodeError as error:
            self._node.get_logger().warning(f"rejected depth image: {error}",
                                            throttle_duration_sec=WARNING_PERIOD_S)
            return
        with self._lock:
            self._depth.add(messages.to_nanoseconds(message.header.stamp), depth)
