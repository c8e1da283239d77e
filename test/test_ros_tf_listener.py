"""The node's one TF input: one subscription per topic with tf2's QoS, ``/tf`` only when something needs
it, every message in the tree before the buffer, tf2_ros's buffer filled the way tf2_ros's listener fills
it, and ``tf_buffer.py``'s where tf2_ros is missing."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not importable (make setup builds it)")

from rclpy.qos import DurabilityPolicy  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from gct_stream_ros.ros.messages import transform_stamped  # noqa: E402
from gct_stream_ros.ros.options import NodeOptions  # noqa: E402
from gct_stream_ros.ros.tf_listener import AUTHORITY, TfListener  # noqa: E402
from gct_stream_ros.ros.tf_tree import TfTree  # noqa: E402
from gct_stream_ros.settings import resolve  # noqa: E402

TINY = {"model.preset": "tiny", "model.checkpoint": ""}
CAMERA_ONLY = {"tf.publish_map_to_camera": True, "tf.publish_odom_to_base": False}
MOUNT = np.array([[0.0, 0.0, 1.0, 0.2], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0]])


class _NodeStub:
    """Records the subscriptions made on it; a test delivers messages through their callbacks."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, tuple[object, object]] = {}

    def create_subscription(self, message_type, topic, callback, qos):
        assert message_type is TFMessage and topic not in self.subscriptions
        self.subscriptions[topic] = (callback, qos)
        return object()

    def deliver(self, topic: str, message: TFMessage) -> None:
        self.subscriptions[topic][0](message)


class _RecordingBuffer:
    """tf2_ros's ``Buffer`` as the listener sees it; notes what the tree knew at each transform."""

    def __init__(self, tree: TfTree | None = None) -> None:
        self.calls: list[tuple[str, str, str, set[str]]] = []
        self.looked_up: list[object] = []
        self._tree = tree

    def _record(self, kind: str, transform, authority: str) -> None:
        known = self._tree.parents_of("base_link") if self._tree is not None else set()
        self.calls.append((kind, transform.child_frame_id, authority, known))

    def set_transform(self, transform, authority: str) -> None:
        self._record("dynamic", transform, authority)

    def set_transform_static(self, transform, authority: str) -> None:
        self._record("static", transform, authority)

    def lookup_transform(self, target_frame, source_frame, time):
        self.looked_up.append(time)
        return transform_stamped(MOUNT, 0, target_frame, source_frame)


def _robot_message() -> TFMessage:
    """The mount first, a second parent of base_link last, in one message."""
    return TFMessage(transforms=[transform_stamped(MOUNT, 0, "base_link", "camera"),
                                 transform_stamped(np.eye(4), 0, "wheel_odom", "base_link")])


def _hears_tf(overrides: dict) -> bool:
    return NodeOptions.from_values(resolve({**TINY, **overrides})).hears_tf


def test_tf_is_heard_only_when_something_needs_it():
    assert _hears_tf({})  # the robot tree: mount lookup, a wheel odometry's odom -> base_link
    assert _hears_tf({**CAMERA_ONLY})  # map -> odom is published: a localisation node's would be on /tf
    assert not _hears_tf({**CAMERA_ONLY, "tf.publish_map_to_odom": False})
    assert _hears_tf({**CAMERA_ONLY, "tf.publish_map_to_odom": False, "scale.source": "odometry",
                      "scale.odometry.input": "tf"})
    assert _hears_tf({"tf.publish_odom_to_base": False, "tf.publish_map_to_odom": False,
                      "scale.source": "odometry", "scale.odometry.input": "topic"})


def test_one_subscription_per_topic_with_tf2_s_listener_qos():
    node = _NodeStub()
    listener = TfListener(node, TfTree(), hear_tf=False, buffer=(_RecordingBuffer(), "tf2_ros"))
    assert set(node.subscriptions) == {"/tf_static"} and listener.topics == ("/tf_static",)
    static_qos = node.subscriptions["/tf_static"][1]
    assert static_qos.depth == 100 and static_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
    listener.hear_tf()
    listener.hear_tf()  # once only (the stub refuses a second subscription)
    assert set(node.subscriptions) == {"/tf_static", "/tf"} and listener.topics == ("/tf_static", "/tf")
    dynamic_qos = node.subscriptions["/tf"][1]
    assert dynamic_qos.depth == 100 and dynamic_qos.durability == DurabilityPolicy.VOLATILE


@pytest.mark.parametrize("topic", ["/tf_static", "/tf"])
def test_the_tree_knows_every_edge_of_a_message_before_the_buffer_gets_any(topic):
    tree, node = TfTree(), _NodeStub()
    buffer = _RecordingBuffer(tree)
    TfListener(node, tree, hear_tf=True, buffer=(buffer, "tf2_ros"))
    node.deliver(topic, _robot_message())
    kind = "static" if topic == "/tf_static" else "dynamic"
    # The mount reaches the buffer when the tree already has base_link's other parent (sent after it).
    assert buffer.calls == [(kind, "camera", AUTHORITY, {"wheel_odom"}), (kind, "base_link", AUTHORITY,
                                                                         {"wheel_odom"})]
    assert AUTHORITY == "default_authority"  # what tf2_ros's own TransformListener passes


def test_tf2_ros_s_buffer_is_used_where_importable_and_lookups_at_a_stamp_ask_for_it(monkeypatch):
    tf2_ros = types.ModuleType("tf2_ros")
    tf2_ros.Buffer = _RecordingBuffer
    monkeypatch.setitem(sys.modules, "tf2_ros", tf2_ros)
    listener = TfListener(_NodeStub(), TfTree(), hear_tf=True)
    assert isinstance(listener.buffer, _RecordingBuffer)
    assert listener.backend == "tf2_ros" and listener.interpolates
    np.testing.assert_allclose(listener.lookup("base_link", "camera", 1_500_000_000), MOUNT)
    np.testing.assert_allclose(listener.lookup("base_link", "camera"), MOUNT)
    assert [time.nanoseconds for time in listener.buffer.looked_up] == [1_500_000_000, 0]


def test_without_tf2_ros_the_own_buffer_chains_what_the_listener_heard(monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2_ros", None)  # the pip-only machine's situation
    tree, node = TfTree(), _NodeStub()
    listener = TfListener(node, tree, hear_tf=False)
    assert listener.backend == "tf_buffer" and not listener.interpolates
    assert listener.lookup("base_link", "camera") is None
    node.deliver("/tf_static", _robot_message())
    np.testing.assert_allclose(listener.lookup("base_link", "camera"), MOUNT, atol=1e-12)
    assert listener.lookup("odom", "camera") is None  # not connected: no transform, no error
    assert tree.other_parent("odom", "base_link") == "wheel_odom"
