"""Our transforms on ``/tf``: map -> odom -> the tracked frame (REP-105), or map -> camera optical frame;
and tf2's QoS, which ``tf_listener.py`` hears TF with.

``tf2_ros`` is used when importable; otherwise ``tf2_msgs/TFMessage`` is published on ``/tf``
directly; without either, TF is skipped with one warning and every other output goes on.
The camera mount is never published here: it belongs to the robot description (``tf_listener.py``
looks it up).
"""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile

from gct_stream_ros.mapping.quaternion import matrix_from_quaternion
from gct_stream_ros.ros import topics
from gct_stream_ros.ros.messages import transform_stamped
from gct_stream_ros.ros.options import FrameNames, TfOptions
from gct_stream_ros.ros.world_frame import TrackedPose, WorldFrame

TF_QOS = QoSProfile(depth=100)
"""What tf2's own broadcaster and listeners use."""
TF_STATIC_QOS = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""tf2's static listener: latched, so mounts published before the node started still arrive."""


def frame_transforms(frames: FrameNames, tf: TfOptions, camera_frame: str, world: WorldFrame,
                     pose_c2w: np.ndarray, tracked: TrackedPose, stamp_ns: int) -> list[TransformStamped]:
    """The transforms to broadcast for one estimate, as the ``tf.*`` switches ask."""
    transforms = []
    if tf.publish_map_to_camera:
        transforms.append(transform_stamped(world.camera_pose(pose_c2w), stamp_ns, frames.map, camera_frame))
    if tf.publish_odom_to_base:
        transforms.append(transform_stamped(tracked.in_odom, stamp_ns, frames.odom, tracked.child_frame))
    if tf.publish_map_to_odom:
        transforms.append(transform_stamped(tracked.map_from_odom, stamp_ns, frames.map, frames.odom))
    return transforms


def matrix_from_transform(message: TransformStamped) -> np.ndarray:
    """4x4 of a transform: child coordinates into the parent frame."""
    translation, rotation = message.transform.translation, message.transform.rotation
    matrix = np.eye(4)
    matrix[:3, :3] = matrix_from_quaternion(np.array([rotation.x, rotation.y, rotation.z, rotation.w]))
    matrix[:3, 3] = (translation.x, translation.y, translation.z)
    return matrix


class TfBroadcaster:
    """Sends transforms on ``/tf`` with whatever this installation offers."""

    def __init__(self, node: Node) -> None:
        try:
            from tf2_ros import TransformBroadcaster

            self._send = TransformBroadcaster(node).sendTransform
            self.backend = "tf2_ros"
            return
        except ImportError:
            pass
        try:
            from tf2_msgs.msg import TFMessage

            publisher = node.create_publisher(TFMessage, topics.TF, TF_QOS)
            self._send = lambda transforms: publisher.publish(TFMessage(transforms=transforms))
            self.backend = "tf2_msgs"
        except ImportError:
            self._send = None
            self.backend = "none"
            node.get_logger().warning("neither tf2_ros nor tf2_msgs can be imported: no TF is published "
                                      "(odometry, path, depth and clouds still are)")

    @property
    def available(self) -> bool:
        return self._send is not None

    def send(self, transforms: list[TransformStamped]) -> None:
        if self._send is not None and transforms:
            self._send(transforms)
