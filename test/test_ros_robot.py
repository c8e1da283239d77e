"""The node as a robot sees it, over real rclpy topics with a stand-in session: odometry continuous across
resets with a covariance and a twist, the tracking status on ``status`` and ``/diagnostics``, CameraInfo
paired by stamp with REP-104 binning."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from ros_fixtures import STEP, FakeSession, RosHarness, SequenceSession, random_image

from gct_stream_ros.ros import messages, topics

pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from gct_stream_ros.ros import status_reports  # noqa: E402
from gct_stream_ros.ros.node import GctStreamNode  # noqa: E402
from gct_stream_ros.settings import SETTINGS_BY_NAME  # noqa: E402

FRAME = "camera_optical"
TIMEOUT_S = 30.0
FRAME_PERIOD_NS = 100_000_000


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(domain_id=196)
    yield harness
    harness.close()


def start(ros: RosHarness, overrides: dict | None = None,
          session: FakeSession | None = None) -> tuple[GctStreamNode, FakeSession]:
    session = session or SequenceSession()
    # No TF in these tests: the mount is not waited for (the TF tests are in test_ros_robot_tf.py).
    node = ros.add_node(functools.partial(GctStreamNode, "gct", session_factory=lambda _config: session),
                        {"input.qos": "reliable", "queue.policy": "all", "tf.mount_timeout": 0.0,
                         **(overrides or {})})
    return node, session


def image_message(stamp_ns: int, width: int = 32, height: int = 24) -> Image:
    rgb = random_image(width, height)
    message = Image(header=messages.header(stamp_ns, FRAME), height=height, width=width, encoding="rgb8",
                    step=width * 3)
    message.data = rgb.tobytes()
    return message


def feed(ros: RosHarness, node: GctStreamNode, publisher, batch: list[Image]) -> None:
    for count, message in enumerate(batch, start=node.diagnostics.received + 1):
        publisher.publish(message)
        ros.wait_for(lambda count=count: node.diagnostics.received >= count, TIMEOUT_S, "the image received")


def wait_matched(ros: RosHarness, node: GctStreamNode, topic: str) -> None:
    publisher = node.outputs[topic]
    ros.wait_for(lambda: publisher.get_subscription_count() >= 1, TIMEOUT_S, f"subscriber of {topic}")


def _position(message: Odometry) -> np.ndarray:
    p = message.pose.pose.position
    return np.array([p.x, p.y, p.z])


def test_odometry_continues_across_a_reset_with_covariance_and_twist(ros):
    node, session = start(ros)
    try:
        odometry = ros.listen(Odometry, "/odometry")
        wait_matched(ros, node, topics.ODOMETRY)
        images = ros.publisher(Image, "/image")
        feed(ros, node, images, [image_message(i * FRAME_PERIOD_NS) for i in range(1, 5)])
        ros.wait_for(lambda: len(odometry) == 4, TIMEOUT_S, "odometry before the reset")
        assert ros.call(Trigger, "/reset", Trigger.Request()).success
        feed(ros, node, images, [image_message(i * FRAME_PERIOD_NS) for i in range(5, 9)])
        ros.wait_for(lambda: len(odometry) == 8, TIMEOUT_S, "odometry after the reset")
        assert session.resets == 1
        # A bare camera (nothing on TF) is its own tracked frame, in odom.
        assert {(m.header.frame_id, m.child_frame_id) for m in odometry} == {("odom", FRAME)}
        positions = np.array([_position(m) for m in odometry])
        steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        # The camera moves 0.1 per frame; the new sequence restarts at identity, odom continues.
        assert steps.max() <= STEP + 1e-9
        assert np.linalg.norm(positions[-1] - positions[0]) == pytest.approx(6 * STEP)
        covariance = np.array(odometry[-1].pose.covariance).reshape(6, 6)
        expected = [SETTINGS_BY_NAME[f"odometry.{name}_stddev"].default ** 2
                    for name in ("position",) * 3 + ("orientation",) * 3]
        np.testing.assert_allclose(np.diag(covariance), expected)
        assert np.diag(np.array(odometry[-1].twist.covariance).reshape(6, 6)).min() > 0
        # 0.1 along the optical x axis every 0.1 s: 1 unit/s along the child (camera) frame's x.
        twist = odometry[-1].twist.twist
        np.testing.assert_allclose([twist.linear.x, twist.linear.y, twist.linear.z], [1.0, 0, 0], atol=1e-9)
        np.testing.assert_allclose([twist.angular.x, twist.angular.y, twist.angular.z], [0, 0, 0], atol=1e-9)
    finally:
        ros.remove_node(node)


def _values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_status_every_frame_and_in_diagnostics(ros, monkeypatch):
    monkeypatch.setattr(status_reports, "SESSION_STATS_PERIOD_S", 0.0)  # the session's numbers at every frame
    node, _ = start(ros, {"diagnostics.period": 0.2})
    try:
        status = ros.listen(DiagnosticStatus, f"/{topics.STATUS}")
        diagnostics = ros.listen(DiagnosticArray, "/diagnostics")
        wait_matched(ros, node, topics.STATUS)
        images = ros.publisher(Image, "/image")
        feed(ros, node, images, [image_message(stamp) for stamp in (10, 20, 30)])
        ros.wait_for(lambda: len(status) == 3, TIMEOUT_S, "a status per frame")
        assert [_values(s)["state"] for s in status] == ["initialising", "tracking", "tracking"]
        assert [s.level for s in status] == [DiagnosticStatus.WARN, DiagnosticStatus.OK, DiagnosticStatus.OK]
        last = _values(status[-1])
        assert last["stamp [ns]"] == "30" and last["frames dropped"] == "0"
        assert float(last["step [ms]"]) > 0 and float(last["input to output latency [ms]"]) > 0
        assert int(last["keyframes"]) == 3 and int(last["cached tokens"]) == 30
        assert last["GPU memory [MB]"] == "0.0"
        assert ros.call(Trigger, "/reset", Trigger.Request()).success
        feed(ros, node, images, [image_message(40)])
        ros.wait_for(lambda: len(status) == 4, TIMEOUT_S, "the status of the frame after the reset")
        assert status[-1].message.startswith("reset") and status[-1].level == DiagnosticStatus.WARN

        def mirrored() -> bool:
            return any(s.name == status[-1].name and _values(s) == _values(status[-1])
                       for array in diagnostics for s in array.status)

        ros.wait_for(mirrored, TIMEOUT_S, "the latest status in /diagnostics")
    finally:
        ros.remove_node(node)


def _info(stamp_ns: int, width: int, height: int, binning: int = 0) -> CameraInfo:
    return CameraInfo(header=messages.header(stamp_ns, FRAME), width=width, height=height, binning_x=binning,
                      binning_y=binning)


def test_camera_info_is_paired_by_stamp_and_binning_is_honoured(ros):
    node, session = start(ros)
    try:
        infos = ros.publisher(CameraInfo, "/camera_info")
        images = ros.publisher(Image, "/image")
        # REP-104: a 32x24 image of a 64x48 calibration binned by 2 fits.
        infos.publish(_info(1, 64, 48, binning=2))
        ros.wait_for(lambda: node.camera_info_sync.latest_stamp_ns == 1, TIMEOUT_S, "camera_info received")
        feed(ros, node, images, [image_message(1)])
        ros.wait_for(lambda: session.pushed == [1], TIMEOUT_S, "the binned frame processed")
        # A resolution change whose image comes before its info: paired with its own info, not the old one.
        feed(ros, node, images, [image_message(2, 64, 48)])
        infos.publish(_info(2, 64, 48))
        ros.wait_for(lambda: session.pushed == [1, 2], TIMEOUT_S, "the first frame of the new size processed")
        # An image whose own info disagrees is rejected, though the newest info would fit it.
        infos.publish(_info(3, 32, 24))
        infos.publish(_info(4, 64, 48))
        ros.wait_for(lambda: node.camera_info_sync.latest_stamp_ns == 4, TIMEOUT_S, "both infos received")
        feed(ros, node, images, [image_message(3, 64, 48), image_message(4, 64, 48)])
        ros.wait_for(lambda: session.pushed == [1, 2, 4], TIMEOUT_S, "the matching frame processed")
        assert node.diagnostics.rejected == 1
    finally:
        ros.remove_node(node)
