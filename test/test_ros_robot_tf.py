"""The node in a robot's TF tree over DDS, default parameters: a typical robot publishes
``base_link -> camera_link -> camera_color_optical_frame`` on ``/tf_static``; the node adds
``map -> odom -> base_link`` and nothing else, the camera's pose in ``map`` agrees with the odometry,
a reset leaves ``odom -> base_link`` continuous while ``map -> odom`` takes the jump, the mount is
waited for, and a frame that already has a parent is never given another."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from ros_fixtures import STEP, RosHarness, SequenceSession, odometry_matrix, random_image

from gct_stream_ros.ros import messages

pytestmark = pytest.mark.ros
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not importable (make setup builds it)")

from geometry_msgs.msg import TransformStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from gct_stream_ros.ros.node import GctStreamNode  # noqa: E402
from gct_stream_ros.ros.tf import matrix_from_transform  # noqa: E402

CAMERA = "camera_color_optical_frame"
TIMEOUT_S = 30.0
FRAME_PERIOD_NS = 100_000_000
STATIC_QOS = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                        reliability=ReliabilityPolicy.RELIABLE)
OPTICAL_IN_LINK = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0],
                            [0.0, 0.0, 0.0, 1.0]])
"""camera_link -> optical frame: x forward becomes z forward (REP-103)."""


def _translation(x: float, y: float, z: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = (x, y, z)
    return matrix


BASE_TO_LINK = _translation(0.2, 0.0, 0.5)
ROBOT = [("base_link", "camera_link", BASE_TO_LINK), ("camera_link", CAMERA, OPTICAL_IN_LINK)]
MOUNT = BASE_TO_LINK @ OPTICAL_IN_LINK


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(domain_id=197)
    yield harness
    harness.close()


def publish_static(ros: RosHarness, edges) -> None:
    publisher = ros.probe.create_publisher(TFMessage, "/tf_static", STATIC_QOS)
    ros._endpoints.append(publisher)
    publisher.publish(TFMessage(transforms=[messages.transform_stamped(matrix, 0, parent, child)
                                            for parent, child, matrix in edges]))


def start(ros: RosHarness, overrides: dict | None = None) -> tuple[GctStreamNode, SequenceSession]:
    session = SequenceSession()
    # Default TF parameters; reliable input and every frame so that a loaded machine thins nothing out.
    node = ros.add_node(functools.partial(GctStreamNode, "gct", session_factory=lambda _config: session),
                        {"input.qos": "reliable", "queue.policy": "all", **(overrides or {})})
    return node, session


def image_message(stamp_ns: int) -> Image:
    rgb = random_image()
    message = Image(header=messages.header(stamp_ns, CAMERA), height=rgb.shape[0], width=rgb.shape[1],
                    encoding="rgb8", step=rgb.shape[1] * 3)
    message.data = rgb.tobytes()
    return message


def feed(ros: RosHarness, node: GctStreamNode, publisher, stamps) -> None:
    for count, stamp in enumerate(stamps, start=node.diagnostics.received + 1):
        publisher.publish(image_message(stamp))
        ros.wait_for(lambda count=count: node.diagnostics.received >= count, TIMEOUT_S, "the image received")


def listen_odometry(ros: RosHarness, node: GctStreamNode) -> list[Odometry]:
    odometry = ros.listen(Odometry, "/odometry")
    ros.wait_for(lambda: node.outputs["odometry"].get_subscription_count() >= 1, TIMEOUT_S, "odometry")
    return odometry


def listen_tf(ros: RosHarness) -> list[TFMessage]:
    """What the node sends on ``/tf``, from its first message on (both ends matched)."""
    heard = ros.listen(TFMessage, "/tf", QoSProfile(depth=100))
    subscription = ros._endpoints[-1]
    ros.wait_for(lambda: subscription.get_publisher_count() >= 1, TIMEOUT_S, "the node's /tf publisher")
    return heard


def by_edge(heard: list[TFMessage]) -> dict[tuple[str, str], list[TransformStamped]]:
    edges: dict[tuple[str, str], list[TransformStamped]] = {}
    for message in heard:
        for transform in message.transforms:
            edges.setdefault((transform.header.frame_id, transform.child_frame_id), []).append(transform)
    return edges


def at_stamp(transforms: list[TransformStamped], stamp_ns: int) -> np.ndarray:
    [match] = [t for t in transforms if messages.to_nanoseconds(t.header.stamp) == stamp_ns]
    return matrix_from_transform(match)


def test_robot_tree_has_one_parent_per_frame_and_the_camera_agrees_with_odometry(ros):
    publish_static(ros, ROBOT)
    node, _ = start(ros)
    try:
        heard = listen_tf(ros)
        odometry = listen_odometry(ros, node)
        stamps = [i * FRAME_PERIOD_NS for i in range(1, 5)]
        feed(ros, node, ros.publisher(Image, "/image"), stamps)
        ros.wait_for(lambda: len(odometry) == len(stamps), TIMEOUT_S, "odometry of every frame")
        ros.wait_for(lambda: len(by_edge(heard).get(("odom", "base_link"), [])) == len(stamps), TIMEOUT_S,
                     "odom -> base_link of every frame")
        edges = by_edge(heard)
        parents: dict[str, set[str]] = {}
        for parent, child in [*edges, *((p, c) for p, c, _ in ROBOT)]:
            parents.setdefault(child, set()).add(parent)
        assert all(len(p) == 1 for p in parents.values()), parents
        assert set(edges) == {("map", "odom"), ("odom", "base_link")}
        assert {(m.header.frame_id, m.child_frame_id) for m in odometry} == {("odom", "base_link")}
        for index, message in enumerate(odometry):
            stamp = messages.to_nanoseconds(message.header.stamp)
            base_in_odom = at_stamp(edges[("odom", "base_link")], stamp)
            np.testing.assert_allclose(odometry_matrix(message), base_in_odom, atol=1e-6)
            camera_in_map = at_stamp(edges[("map", "odom")], stamp) @ base_in_odom @ MOUNT
            # The stand-in camera moves STEP per frame along its optical x axis from the first frame's pose.
            expected = MOUNT @ _translation(STEP * index, 0.0, 0.0)
            np.testing.assert_allclose(camera_in_map, expected, atol=1e-6)
    finally:
        ros.remove_node(node)


def test_reset_keeps_odom_continuous_and_map_to_odom_takes_the_jump(ros):
    publish_static(ros, ROBOT)
    node, session = start(ros)
    try:
        heard = listen_tf(ros)
        images = ros.publisher(Image, "/image")
        feed(ros, node, images, [i * FRAME_PERIOD_NS for i in range(1, 5)])
        ros.wait_for(lambda: len(by_edge(heard).get(("odom", "base_link"), [])) == 4, TIMEOUT_S, "4 poses")
        assert ros.call(Trigger, "/reset", Trigger.Request()).success
        feed(ros, node, images, [i * FRAME_PERIOD_NS for i in range(5, 9)])
        ros.wait_for(lambda: len(by_edge(heard).get(("odom", "base_link"), [])) == 8, TIMEOUT_S, "8 poses")
        assert session.resets == 1
        edges = by_edge(heard)
        stamps = [i * FRAME_PERIOD_NS for i in range(1, 9)]
        base = np.array([at_stamp(edges[("odom", "base_link")], stamp)[:3, 3] for stamp in stamps])
        # No jump in odom beyond the motion of one frame, across the reset.
        assert np.linalg.norm(np.diff(base, axis=0), axis=1).max() <= STEP + 1e-6
        jump = [at_stamp(edges[("map", "odom")], stamp) for stamp in stamps]
        np.testing.assert_allclose(jump[0], np.eye(4), atol=1e-9)
        # The new sequence restarted at identity 3 steps along: map -> odom moved the other way.
        assert np.linalg.norm(jump[-1][:3, 3]) == pytest.approx(3 * STEP, abs=1e-6)
    finally:
        ros.remove_node(node)


def test_the_mount_is_waited_for(ros):
    node, _ = start(ros, {"tf.mount_timeout": 20.0})
    try:
        odometry = listen_odometry(ros, node)
        feed(ros, node, ros.publisher(Image, "/image"), [FRAME_PERIOD_NS, 2 * FRAME_PERIOD_NS])
        publish_static(ros, ROBOT)  # the robot description comes up after the first pose is ready
        ros.wait_for(lambda: len(odometry) == 2, TIMEOUT_S, "odometry")
        assert {m.child_frame_id for m in odometry} == {"base_link"}
    finally:
        ros.remove_node(node)


def test_a_mount_that_appears_late_is_switched_to_and_odom_goes_on(ros):
    node, _ = start(ros, {"tf.mount_timeout": 0.0})
    try:
        odometry = listen_odometry(ros, node)
        images = ros.publisher(Image, "/image")
        feed(ros, node, images, [FRAME_PERIOD_NS, 2 * FRAME_PERIOD_NS])
        ros.wait_for(lambda: len(odometry) == 2, TIMEOUT_S, "odometry before the mount")
        publish_static(ros, ROBOT)
        ros.wait_for(lambda: node._tf_listener.lookup("base_link", CAMERA) is not None, TIMEOUT_S, "mount")
        feed(ros, node, images, [3 * FRAME_PERIOD_NS, 4 * FRAME_PERIOD_NS])
        ros.wait_for(lambda: len(odometry) == 4, TIMEOUT_S, "odometry after the mount")
        # Nothing on TF at first: the camera is tracked; then the base, from where the camera had got to.
        assert [m.child_frame_id for m in odometry] == [CAMERA, CAMERA, "base_link", "base_link"]
        positions = np.array([odometry_matrix(m)[:3, 3] for m in odometry])
        assert np.linalg.norm(np.diff(positions, axis=0), axis=1).max() <= STEP + 1e-6
    finally:
        ros.remove_node(node)


def test_a_frame_with_a_parent_never_gets_a_second(ros):
    # Wheel odometry already publishes its own parent of base_link.
    publish_static(ros, [*ROBOT, ("wheel_odom", "base_link", np.eye(4))])
    node, _ = start(ros, {"tf.mount_timeout": 5.0})
    try:
        heard = listen_tf(ros)
        odometry = listen_odometry(ros, node)
        feed(ros, node, ros.publisher(Image, "/image"), [FRAME_PERIOD_NS * i for i in range(1, 4)])
        ros.wait_for(lambda: len(odometry) == 3, TIMEOUT_S, "odometry")
        ros.wait_for(lambda: ("map", "odom") in by_edge(heard), TIMEOUT_S, "map -> odom")
        assert ("odom", "base_link") not in by_edge(heard)
    finally:
        ros.remove_node(node)
