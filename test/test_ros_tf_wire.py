"""TF on the wire: another process receives the node's ``/tf`` over DDS, and a camera mount published on
``/tf_static`` reaches the node (through tf2_ros where importable, through ``tf_buffer.py`` otherwise)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ros_fixtures import FakeSession, RosHarness, fake_result, odometry_matrix, random_image

pytestmark = pytest.mark.ros
pytest.importorskip("tf2_msgs", reason="tf2_msgs is not importable (`make setup` builds it: interfaces/)")

from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from gct_stream_ros.mapping.quaternion import matrix_from_quaternion  # noqa: E402
from gct_stream_ros.ros import messages, topics  # noqa: E402
from gct_stream_ros.ros.node import GctStreamNode  # noqa: E402
from gct_stream_ros.ros.world_frame import OPTICAL_TO_BODY, WorldFrame  # noqa: E402

DOMAIN_ID = 195
LISTENER = Path(__file__).with_name("tf_listener_process.py")
CAMERA = "camera_optical"
TIMEOUT_S = 30.0
STAMPS = [1_700_000_000_000_000_000 + 100_000_000 * i for i in range(4)]
ROS_TF_MESSAGE_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
"""tf2_msgs/msg/TFMessage's type hash in ROS 2 (Jazzy, Kilted): ROS tools read a /tf of this type."""
STATIC_BROADCASTER_QOS = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""tf2's StaticTransformBroadcaster."""


def _yaw(degrees: float, translation: tuple[float, float, float]) -> np.ndarray:
    angle = np.radians(degrees)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, 3] = translation
    return matrix


BASE_TO_LINK = _yaw(90, (0.2, 0.0, 0.5))
"""A camera 20 cm ahead of and 50 cm above the base, looking to the left (not the default mount)."""
MOUNT = BASE_TO_LINK @ OPTICAL_TO_BODY
"""base -> camera_link -> camera_optical, as a driver and a URDF publish it."""


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(domain_id=DOMAIN_ID)
    yield harness
    harness.close()


def _start(ros: RosHarness, overrides: dict | None = None) -> GctStreamNode:
    session = FakeSession()
    return ros.add_node(functools.partial(GctStreamNode, "gct", session_factory=lambda _config: session),
                        {"input.qos": "reliable", "queue.policy": "all", **(overrides or {})})


def _listener_process(count: int) -> subprocess.Popen:
    """The other process, once its ``/tf`` subscription has matched the node's publisher."""
    process = subprocess.Popen([sys.executable, str(LISTENER), str(count), str(TIMEOUT_S)],
                               env={**os.environ, "ROS_DOMAIN_ID": str(DOMAIN_ID)}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    first = process.stdout.readline()
    if first.strip() != "ready":
        process.kill()
        raise AssertionError(f"the listener process did not start: {first}{process.stdout.read()}")
    return process


def _received_transforms(process: subprocess.Popen) -> list[dict]:
    output, _ = process.communicate(timeout=TIMEOUT_S + 10)
    assert process.returncode == 0, output
    return [json.loads(line) for line in output.splitlines()]


def _matrix(transform: dict) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = matrix_from_quaternion(np.array(transform["rotation"]))
    matrix[:3, 3] = transform["translation"]
    return matrix


def _run_frames(ros: RosHarness, node: GctStreamNode) -> tuple[list[dict], list[Odometry]]:
    """Feed one image per stamp; what the other process heard on /tf and what came on /odometry."""
    process = _listener_process(len(STAMPS))
    odometry = ros.listen(Odometry, "/odometry")
    ros.wait_for(lambda: node.outputs[topics.ODOMETRY].get_subscription_count() >= 1, TIMEOUT_S,
                 "odometry matched")
    images = ros.publisher(Image, "/image")
    rgb = random_image()
    for stamp in STAMPS:
        message = Image(header=messages.header(stamp, CAMERA), height=rgb.shape[0], width=rgb.shape[1],
                        encoding="rgb8", step=rgb.shape[1] * 3, data=rgb.tobytes())
        images.publish(message)
    ros.wait_for(lambda: len(odometry) == len(STAMPS), TIMEOUT_S, "one odometry message per frame")
    return _received_transforms(process), odometry


def test_another_process_receives_the_camera_pose_with_the_image_stamps(ros):
    # The camera-only tree (map -> camera): one transform per frame, the camera's pose itself. The default
    # tree is tested in test_ros_robot_tf.py.
    node = _start(ros, {"tf.publish_map_to_camera": True, "tf.publish_odom_to_base": False,
                        "tf.publish_map_to_odom": False})
    try:
        transforms, odometry = _run_frames(ros, node)
    finally:
        ros.remove_node(node)
    assert [(t["parent"], t["child"]) for t in transforms] == [("map", CAMERA)] * len(STAMPS)
    assert [t["stamp_ns"] for t in transforms] == STAMPS
    for transform, message in zip(transforms, odometry):
        assert messages.to_nanoseconds(message.header.stamp) == transform["stamp_ns"]
        np.testing.assert_allclose(_matrix(transform), odometry_matrix(message), atol=1e-9)
    # The camera moves along its own x axis (right), which is -y in the map (REP-103).
    np.testing.assert_allclose(_matrix(transforms[-1])[:3, 3], [0.0, -0.3, 0.0], atol=1e-9)


def _tf_subscriptions(node: GctStreamNode) -> list[str]:
    return sorted(s.topic_name for s in node.subscriptions if s.topic_name in (topics.TF, topics.TF_STATIC))


def test_the_camera_only_tree_hears_tf_static_alone_until_a_change_needs_tf(ros):
    node = _start(ros, {"tf.publish_map_to_camera": True, "tf.publish_odom_to_base": False,
                        "tf.publish_map_to_odom": False})
    try:
        assert _tf_subscriptions(node) == ["/tf_static"]
        assert node.set_parameters([Parameter("tf.publish_map_to_odom", value=True)])[0].successful
        assert _tf_subscriptions(node) == ["/tf", "/tf_static"]
    finally:
        ros.remove_node(node)
    node = _start(ros)  # the default robot tree: one subscription per topic for the tree and the mount
    try:
        assert _tf_subscriptions(node) == ["/tf", "/tf_static"]
    finally:
        ros.remove_node(node)


def test_the_tf_message_type_is_ros_2s(ros):
    node = _start(ros)
    try:
        hashes = [str(info.topic_type_hash) for info in node.get_publishers_info_by_topic(topics.TF)]
    finally:
        ros.remove_node(node)
    assert hashes == [ROS_TF_MESSAGE_HASH]


def _static_mount() -> TFMessage:
    camera_link = messages.transform_stamped(BASE_TO_LINK, 0, "base_link", "camera_link")
    optical = messages.transform_stamped(OPTICAL_TO_BODY, 0, "camera_link", CAMERA)
    return TFMessage(transforms=[camera_link, optical])


@pytest.mark.parametrize("tf2_ros_importable", [True, False], ids=["tf2_ros", "own-listener"])
def test_a_static_mount_on_tf_static_places_the_base_in_odom(ros, monkeypatch, tf2_ros_importable):
    if tf2_ros_importable:
        pytest.importorskip("tf2_ros", reason="tf2_ros (a ROS install) is not importable")
    else:
        monkeypatch.setitem(sys.modules, "tf2_ros", None)  # the pip-only machine's situation
    static = ros.probe.create_publisher(TFMessage, "/tf_static", STATIC_BROADCASTER_QOS)
    static.publish(_static_mount())
    node = _start(ros, {"tf.publish_map_to_odom": False})
    try:
        ros.wait_for(lambda: node._tf_listener.lookup("base_link", CAMERA) is not None, TIMEOUT_S,
                     "the mount known to the node")
        transforms, odometry = _run_frames(ros, node)
    finally:
        ros.remove_node(node)
        ros.probe.destroy_publisher(static)
    assert [(t["parent"], t["child"]) for t in transforms] == [("odom", "base_link")] * len(STAMPS)
    assert [t["stamp_ns"] for t in transforms] == STAMPS
    world = WorldFrame(MOUNT, "base_link")
    for index, (transform, message) in enumerate(zip(transforms, odometry)):
        base = _matrix(transform)
        np.testing.assert_allclose(base, odometry_matrix(message), atol=1e-9)
        pose = fake_result(index, STAMPS[index], random_image()).pose_c2w
        np.testing.assert_allclose(base @ MOUNT, MOUNT @ pose, atol=1e-9)
        np.testing.assert_allclose(base, world.base_pose(pose), atol=1e-9)
    # Looking left, the camera's move to its right is the base moving forward (+x), not sideways.
    np.testing.assert_allclose(_matrix(transforms[-1])[:3, 3], [0.3, 0.0, 0.0], atol=1e-9)

