"""The node's feed of the metric-scale sources over real topics: odometry interpolated at image stamps, depth
images in metres matched by stamp, and what the TF input says without tf2_ros."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from ros_fixtures import RosHarness

pytestmark = pytest.mark.ros

from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from gct_stream_ros.ros import messages  # noqa: E402
from gct_stream_ros.ros.scale_inputs import ScaleInputs  # noqa: E402
from gct_stream_ros.ros.tf_listener import TfListener  # noqa: E402
from gct_stream_ros.ros.tf_tree import TfTree  # noqa: E402
from gct_stream_ros.stream.scale.options import ScaleOptions  # noqa: E402

TIMEOUT_S = 30.0
MS = 1_000_000


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(domain_id=217)
    yield harness
    harness.close()


def _inputs(ros: RosHarness, name: str, **options) -> tuple[Node, ScaleInputs]:
    node = ros.add_node(functools.partial(Node, name))
    tf = TfListener(node, TfTree(), hear_tf=True)
    return node, ScaleInputs(node, ScaleOptions(**options), "odom", "base_link", tf)


def test_odometry_topic_gives_the_camera_position_at_the_image_stamp(ros):
    node, inputs = _inputs(ros, "odometry_feed", source="odometry", odometry_input="topic")
    try:
        publisher = ros.publisher(Odometry, "/scale/odometry")
        for stamp_ms, x in [(0, 0.0), (100, 1.0)]:
            message = Odometry(header=messages.header(stamp_ms * MS, "odom"), child_frame_id="base_link")
            message.pose.pose.position.x = x
            publisher.publish(message)
        ros.wait_for(lambda: inputs.reference(100 * MS, "cam", (4, 4)).camera_pose is not None, TIMEOUT_S,
                     "odometry received")
        pose = inputs.reference(30 * MS, "cam", (4, 4)).camera_pose
        assert pose[0, 3] == pytest.approx(0.3)  # no mount in TF: the camera is taken to sit at the base
        assert inputs.reference(300 * MS, "cam", (4, 4)).camera_pose is None  # beyond the sync tolerance
        assert "odometry from /scale/odometry" in inputs.description
    finally:
        ros.remove_node(node)


def test_depth_topic_gives_metres_at_the_nearest_stamp(ros):
    node, inputs = _inputs(ros, "depth_feed", source="depth", sync_tolerance_s=0.01)
    try:
        publisher = ros.publisher(Image, "/scale/depth")
        millimetres = np.full((2, 3), 1500, np.uint16)
        publisher.publish(Image(header=messages.header(500 * MS, "cam"), height=2, width=3, encoding="16UC1",
                                step=6, data=millimetres.tobytes()))
        ros.wait_for(lambda: inputs.reference(505 * MS, "cam", (2, 3)).depth is not None, TIMEOUT_S,
                     "depth received")
        reference = inputs.reference(505 * MS, "cam", (2, 3))
        np.testing.assert_allclose(reference.depth, 1.5)
        assert reference.input_hw == (2, 3)
        assert inputs.reference(520 * MS, "cam", (2, 3)).depth is None
    finally:
        ros.remove_node(node)


def test_tf_odometry_says_what_is_missing_without_tf2_ros(ros):
    node, inputs = _inputs(ros, "tf_feed", source="odometry", odometry_input="tf")
    try:
        try:
            import tf2_ros  # noqa: F401
        except ImportError:
            assert "tf2_ros missing" in inputs.description
            assert inputs.reference(0, "cam", (2, 2)).camera_pose is None
        else:
            assert inputs.description == "odometry from TF odom -> camera"
    finally:
        ros.remove_node(node)
