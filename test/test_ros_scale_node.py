"""The node with a metric scale, over real topics with a stand-in session: a fixed factor on every output and
in save_map, and the odometry source turning the outputs metric (and saying so) once it has an estimate."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from ros_fixtures import FakeSession, RosHarness, fake_result, random_image

pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from nav_msgs.msg import Odometry, Path  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from gct_stream_ros.mapping.ply import read_ply  # noqa: E402
from gct_stream_ros.mapping.tum import read_tum  # noqa: E402
from gct_stream_ros.ros import messages  # noqa: E402
from gct_stream_ros.ros.node import GctStreamNode  # noqa: E402
from gct_stream_ros.ros.world_frame import OPTICAL_TO_BODY  # noqa: E402

FRAME = "camera_optical"
TIMEOUT_S = 30.0
STAMPS = [1_000_000_000 + 100_000_000 * i for i in range(10)]
MODEL_UNITS_PER_FRAME = 0.1
"""``fake_result``'s camera moves this far along its x axis per frame."""


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(domain_id=218)
    yield harness
    harness.close()


def _start(ros: RosHarness, overrides: dict) -> GctStreamNode:
    session = FakeSession()
    factory = functools.partial(GctStreamNode, "gct_scale", session_factory=lambda _config: session)
    return ros.add_node(factory,
                        {"input.qos": "reliable", "queue.policy": "all", "output.points.decimation": 1,
                         "diagnostics.period": 0.1, **overrides})


def _image(rgb: np.ndarray, stamp_ns: int) -> Image:
    message = Image(header=messages.header(stamp_ns, FRAME), height=rgb.shape[0], width=rgb.shape[1],
                    encoding="rgb8", step=rgb.shape[1] * 3)
    message.data = rgb.tobytes()
    return message


def _feed(ros: RosHarness, node: GctStreamNode, rgb: np.ndarray, stamps: list[int]) -> None:
    images = ros.publisher(Image, "/image")
    for count, stamp in enumerate(stamps, start=1):
        images.publish(_image(rgb, stamp))
        ros.wait_for(lambda c=count: node.diagnostics.received >= c, TIMEOUT_S, "image received")


def _scale_values(reports: list) -> list[dict[str, str]]:
    return [{kv.key: kv.value for kv in s.values} for r in reports for s in r.status
            if s.name == "gct_scale: stream"]


def _depth(message: Image) -> np.ndarray:
    return np.frombuffer(bytes(message.data), "<f4")


def test_fixed_factor_scales_every_output_and_the_saved_map(ros, tmp_path):
    node = _start(ros, {"scale.source": "fixed", "scale.factor": 2.0, "map.save_dir": str(tmp_path)})
    try:
        topics = {"depth": (Image, "/depth/image"), "points": (PointCloud2, "/points"),
                  "odometry": (Odometry, "/odometry"), "path": (Path, "/path")}
        received = {name: ros.listen(kind, topic) for name, (kind, topic) in topics.items()}
        reports = ros.listen(DiagnosticArray, "/diagnostics")
        statuses = ros.listen(DiagnosticStatus, "/status")
        for publisher in (node.outputs[topic.lstrip("/")] for _, topic in topics.values()):
            ros.wait_for(lambda p=publisher: p.get_subscription_count() > 0, TIMEOUT_S, "matched")
        rgb = random_image()
        _feed(ros, node, rgb, STAMPS[:4])
        ros.wait_for(lambda: all(len(r) == 4 for r in received.values()), TIMEOUT_S, "outputs")
        for index, stamp in enumerate(STAMPS[:4]):
            unscaled = fake_result(index, stamp, rgb)
            np.testing.assert_array_equal(_depth(received["depth"][index]), 2.0 * _depth(
                messages.depth_image(unscaled, FRAME)), err_msg="depth")
            want, _ = messages.cloud_points(unscaled, np.linalg.inv(unscaled.pose_c2w), 1, 1.0)
            got, _ = messages.unpack_point_cloud(received["points"][index])
            np.testing.assert_allclose(got, 2.0 * want, rtol=1e-6, atol=1e-6)
            position = received["odometry"][index].pose.pose.position
            want_position = 2.0 * (OPTICAL_TO_BODY @ unscaled.pose_c2w)[:3, 3]
            np.testing.assert_allclose([position.x, position.y, position.z], want_position, atol=1e-12)
        path = received["path"][-1].poses
        assert [p.pose.position.y for p in path] == pytest.approx([-2.0 * MODEL_UNITS_PER_FRAME * i
                                                                   for i in range(4)])
        response = ros.call(Trigger, "/save_map", Trigger.Request())
        assert response.success, response.message
        _, poses = read_tum(tmp_path / "trajectory.tum")
        assert [p[1, 3] for p in poses] == pytest.approx([-0.2 * i for i in range(4)])
        xyz, _ = read_ply(tmp_path / "map.ply")
        assert np.median(xyz[:, 0]) == pytest.approx(4.0, rel=0.01)  # the plane 2 units in front, x2
        ros.wait_for(lambda: any(v.get("scale source") == "fixed" for v in _scale_values(reports)), TIMEOUT_S,
                     "scale in the diagnostics")
        values = [v for v in _scale_values(reports) if v.get("scale source") == "fixed"][-1]
        assert values["scale [m per model unit]"] == "2" and values["scale uncertainty [%]"] == "0.00"
        ros.wait_for(lambda: len(statuses) >= 4, TIMEOUT_S, "a status per frame")
        for status in statuses:  # each frame's status says what its outputs are in
            values = {kv.key: kv.value for kv in status.values}
            assert values["scale source"] == "fixed" and values["scale [m per model unit]"] == "2"
    finally:
        ros.remove_node(node)


def test_odometry_topic_makes_the_outputs_metric_once_it_has_an_estimate(ros):
    metres_per_frame = 0.25
    node = _start(ros, {"scale.source": "odometry", "scale.odometry.input": "topic"})
    try:
        depth = ros.listen(Image, "/depth/image")
        path = ros.listen(Path, "/path")
        reports = ros.listen(DiagnosticArray, "/diagnostics")
        for publisher in (node.outputs["depth/image"], node.outputs["path"]):
            ros.wait_for(lambda p=publisher: p.get_subscription_count() > 0, TIMEOUT_S, "matched")
        ros.wait_for(lambda: any("no estimate yet" in v.get("scale", "") for v in _scale_values(reports)),
                     TIMEOUT_S, "diagnostics saying the outputs are unscaled")
        odometry = ros.publisher(Odometry, "/scale/odometry")
        for index, stamp in enumerate(STAMPS):
            message = Odometry(header=messages.header(stamp, "odom"), child_frame_id="base_link")
            message.pose.pose.position.x = metres_per_frame * index  # no mount in TF: the camera is the base
            odometry.publish(message)
        last = node._scale_inputs.reference
        ros.wait_for(lambda: last(STAMPS[-1], FRAME, (24, 32)).camera_pose is not None, TIMEOUT_S,
                     "odometry received")
        _feed(ros, node, random_image(), STAMPS)
        ros.wait_for(lambda: len(depth) == len(path) == len(STAMPS), TIMEOUT_S, "depth images and paths")
        # The first frame anchors, each later one is an increment: the 6th result has the 5 samples needed.
        medians = [float(np.nanmedian(_depth(m))) for m in depth]
        scale = metres_per_frame / MODEL_UNITS_PER_FRAME
        assert medians == pytest.approx([2.0] * 5 + [2.0 * scale] * 5)
        assert [len(m.poses) for m in path] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]  # restarted in metres
        ros.wait_for(lambda: any(v.get("scale source") == "odometry" and v["scale samples"] != "0"
                                 for v in _scale_values(reports)), TIMEOUT_S, "the estimate in /diagnostics")
        values = [v for v in _scale_values(reports) if v["scale samples"] != "0"][-1]
        assert float(values["scale [m per model unit]"]) == pytest.approx(scale)
        assert values["scale"].startswith("2.5 m per model unit")
    finally:
        ros.remove_node(node)
