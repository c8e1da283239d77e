"""The node end to end over real rclpy topics, with a stand-in session (the engine is tested elsewhere):
outputs, services, diagnostics, resets and sequence ends (no accepted frame vanishes), the threads' rules."""

from __future__ import annotations

import functools
import logging
import threading
import time

import numpy as np
import pytest
from ros_fixtures import FakeSession, RosHarness, fake_result, random_image

from gct_stream_ros.ros import messages, topics
from gct_stream_ros.settings import SettingsError

pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from nav_msgs.msg import Odometry, Path  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from gct_stream_ros.mapping.ply import read_ply  # noqa: E402
from gct_stream_ros.mapping.tum import read_tum  # noqa: E402
from gct_stream_ros.ros.node import GctStreamNode  # noqa: E402

FRAME = "camera_optical"
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(domain_id=171)
    yield harness
    harness.close()


def start(ros: RosHarness, overrides: dict | None = None, session: FakeSession | None = None,
          name: str = "gct") -> tuple[GctStreamNode, FakeSession]:
    session = session or FakeSession()
    # Reliable input and every frame processed, so a loaded machine does not thin out the test images.
    # No TF in these tests: the camera mount is not waited for.
    node = ros.add_node(functools.partial(GctStreamNode, name, session_factory=lambda _config: session),
                        {"input.qos": "reliable", "queue.policy": "all", "tf.mount_timeout": 0.0,
                         **(overrides or {})})
    return node, session


def image_message(rgb: np.ndarray, stamp_ns: int, frame_id: str = FRAME, encoding: str = "rgb8") -> Image:
    message = Image(header=messages.header(stamp_ns, frame_id), height=rgb.shape[0], width=rgb.shape[1],
                    encoding=encoding, step=rgb.shape[1] * 3)
    message.data = rgb.tobytes()
    return message


def feed(ros: RosHarness, node: GctStreamNode, publisher, batch: list[Image]) -> None:
    """Publish one message at a time, each once the node took the previous one (no loss in DDS queues)."""
    for count, message in enumerate(batch, start=node.diagnostics.received + 1):
        publisher.publish(message)
        ros.wait_for(functools.partial(_received_at_least, node, count), TIMEOUT_S, "the image received")


def _received_at_least(node: GctStreamNode, count: int) -> bool:
    return node.diagnostics.received >= count


def wait_matched(ros: RosHarness, publisher, count: int = 1) -> None:
    ros.wait_for(lambda: publisher.get_subscription_count() >= count, TIMEOUT_S,
                 f"subscriber of {publisher.topic_name}")


def test_every_output_per_frame_with_the_input_stamp_and_frames(ros):
    node, session = start(ros, {"output.points.decimation": 3, "output.points.min_confidence": 2.0})
    try:
        outputs = {topic: ros.listen(kind, f"/{topic}") for topic, kind in [
            ("depth/image", Image), ("depth/confidence", Image), ("depth/camera_info", CameraInfo),
            ("points", PointCloud2), ("odometry", Odometry), ("path", Path)]}
        for topic in outputs:
            wait_matched(ros, node.outputs[topic])
        images = ros.publisher(Image, "/image")
        rgb = random_image()
        stamps = [1_000_000_000 + 33_000_000 * i for i in range(4)]
        feed(ros, node, images, [image_message(rgb, stamp) for stamp in stamps])
        ros.wait_for(lambda: all(len(received) == len(stamps) for received in outputs.values()), TIMEOUT_S,
                 "one message per frame on every output")
        for topic, received in outputs.items():
            assert [messages.to_nanoseconds(m.header.stamp) for m in received] == stamps, topic
        assert {m.header.frame_id for m in outputs["depth/image"]} == {FRAME}
        assert {m.header.frame_id for m in outputs["points"]} == {FRAME}
        # Nothing on TF: the camera is its own tracked frame, in odom (docs/node.md, "Frames and TF").
        assert {(m.header.frame_id, m.child_frame_id) for m in outputs["odometry"]} == {("odom", FRAME)}
        depth = outputs["depth/image"][0]
        assert (depth.encoding, depth.height, depth.width, depth.step) == ("32FC1", 24, 32, 32 * 4)
        assert np.isnan(np.frombuffer(bytes(depth.data), "<f4")[0])
        assert outputs["depth/confidence"][0].encoding == "32FC1"
        info = outputs["depth/camera_info"][0]
        assert (info.width, info.height, info.k[0]) == (32, 24, 32.0)
        cloud = outputs["points"][-1]
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb"]
        layout = (cloud.point_step, cloud.row_step, cloud.height, cloud.is_dense)
        assert layout == (16, 16 * cloud.width, 1, True)
        expected = fake_result(3, stamps[3], rgb)
        want_xyz, want_rgb = messages.cloud_points(expected, np.linalg.inv(expected.pose_c2w), 3, 2.0)
        got_xyz, got_rgb = messages.unpack_point_cloud(cloud)
        np.testing.assert_allclose(got_xyz, want_xyz, atol=1e-5)
        np.testing.assert_array_equal(got_rgb, want_rgb)
        assert 0 < len(got_xyz) < 24 * 32 // 9
        assert len(outputs["path"][-1].poses) == 4
        assert session.pushed == stamps
    finally:
        ros.remove_node(node)


def test_the_node_publishes_the_topic_table_and_offers_its_services(ros):
    node, _ = start(ros)
    try:
        published = dict(node.get_publisher_names_and_types_by_node(node.get_name(), node.get_namespace()))
        for topic, msgtype in topics.OUTPUT_TYPES.items():
            assert published.get(topics.absolute(topic)) == [msgtype], topic
        services = dict(node.get_service_names_and_types_by_node(node.get_name(), node.get_namespace()))
        for service in (topics.RESET_SERVICE, topics.SAVE_MAP_SERVICE):
            assert services.get(topics.absolute(service)) == ["std_srvs/srv/Trigger"], service
    finally:
        ros.remove_node(node)


def test_outputs_nobody_listens_to_are_not_computed(ros, monkeypatch):
    calls = []
    monkeypatch.setattr(messages, "depth_image", lambda *a, **k: calls.append(a))
    node, _ = start(ros)
    try:
        odometry = ros.listen(Odometry, "/odometry")
        wait_matched(ros, node.outputs[topics.ODOMETRY])
        images = ros.publisher(Image, "/image")
        feed(ros, node, images, [image_message(random_image(), stamp) for stamp in (1, 2, 3)])
        ros.wait_for(lambda: len(odometry) == 3, TIMEOUT_S, "odometry")
        assert calls == []
    finally:
        ros.remove_node(node)


def test_map_is_latched_bounded_and_path_bounded(ros):
    node, _ = start(ros, {"output.map.period": 0.1, "output.map.max_points": 50,
                          "output.map.voxel_size": 0.01, "output.path.max_length": 3})
    try:
        path = ros.listen(Path, "/path")
        wait_matched(ros, node.outputs[topics.PATH])
        images = ros.publisher(Image, "/image")
        feed(ros, node, images, [image_message(random_image(), stamp) for stamp in range(1, 7)])
        ros.wait_for(lambda: len(path) == 6, TIMEOUT_S, "path messages")
        assert [len(m.poses) for m in path] == [1, 2, 3, 3, 3, 3]
        assert [messages.to_nanoseconds(p.header.stamp) for p in path[-1].poses] == [4, 5, 6]
        ros.wait_for(lambda: not node.map_state.map_changed, TIMEOUT_S, "map published")
        late = ros.listen(PointCloud2, "/map/points", LATCHED)
        ros.wait_for(lambda: len(late) >= 1, TIMEOUT_S, "latched map for a late subscriber")
        xyz, _ = messages.unpack_point_cloud(late[-1])
        assert len(xyz) == 50 and late[-1].header.frame_id == "map"
        assert messages.to_nanoseconds(late[-1].header.stamp) == 6
    finally:
        ros.remove_node(node)


def test_diagnostics_report_rates_counts_and_the_silence(ros):
    node, _ = start(ros, {"diagnostics.period": 0.2, "diagnostics.no_data_timeout": 0.5})
    try:
        reports = ros.listen(DiagnosticArray, "/diagnostics")
        images = ros.publisher(Image, "/image")
        feed(ros, node, images, [image_message(random_image(), stamp) for stamp in (1, 2, 3)])
        def ours() -> list[tuple[DiagnosticStatus, dict[str, str]]]:
            return [(s, {kv.key: kv.value for kv in s.values}) for r in reports for s in r.status
                    if s.name == "gct: stream"]

        ros.wait_for(lambda: any(v["frames processed"] == "3" for _, v in ours()), TIMEOUT_S,
                     "a report with 3 processed frames")
        status, values = next((s, v) for s, v in ours() if v["frames processed"] == "3")
        assert values["frames received"] == "3" and values["messages rejected"] == "0"
        assert values["model step max [ms]"] == "3.0" and values["cache tokens per layer"] == "30"
        assert status.hardware_id == "cpu (float32)"
        ros.wait_for(lambda: ours()[-1][0].level == DiagnosticStatus.WARN, TIMEOUT_S, "no-data warning")
        warning = ours()[-1][0].message
        assert warning.startswith("no image received for") and warning.endswith("on /image")
    finally:
        ros.remove_node(node)


@pytest.mark.parametrize(("policy", "expect_drops"), [("latest", True), ("all", False)])
def test_queue_policy_under_overload(ros, policy, expect_drops):
    session = FakeSession(step_delay_s=0.05)
    node, _ = start(ros, {"queue.policy": policy, "queue.size": 1}, session)
    try:
        images = ros.publisher(Image, "/image")
        stamps = list(range(1, 13))
        feed(ros, node, images, [image_message(random_image(), stamp) for stamp in stamps])
        ros.wait_for(lambda: node.idle, TIMEOUT_S, "queue drained")
        if expect_drops:
            assert node.diagnostics.dropped > 0
            assert len(session.pushed) + node.diagnostics.dropped == len(stamps)
            assert session.pushed[-1] == stamps[-1]
        else:
            assert node.diagnostics.dropped == 0 and session.pushed == stamps
    finally:
        ros.remove_node(node)


@pytest.mark.parametrize(("policy", "history"), [("latest", HistoryPolicy.KEEP_LAST),
                                                 ("all", HistoryPolicy.KEEP_ALL)])
def test_queue_all_keeps_every_sample_in_the_subscription(ros, policy, history):
    """A bounded reader history loses frames while the model thread starves the executor."""
    node, _ = start(ros, {"queue.policy": policy})
    try:
        [image] = [s for s in node.subscriptions if s.topic_name == "/image"]
        assert image.qos_profile.history == history
        assert image.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    finally:
        ros.remove_node(node)


def test_reset_and_save_map_services(ros, tmp_path):
    node, session = start(ros, {"map.save_dir": str(tmp_path / "maps")})
    try:
        images = ros.publisher(Image, "/image")
        feed(ros, node, images, [image_message(random_image(), stamp) for stamp in (10, 20, 30)])
        ros.wait_for(lambda: len(node.map_state.trajectory()) == 3, TIMEOUT_S, "three processed frames")
        response = ros.call(Trigger, "/save_map", Trigger.Request())
        assert response.success and "map.ply" in response.message and "trajectory.tum" in response.message
        xyz, rgb = read_ply(tmp_path / "maps" / "map.ply")
        assert len(xyz) == len(node.map_state) > 0 and rgb.dtype == np.uint8
        stamps, poses = read_tum(tmp_path / "maps" / "trajectory.tum")
        assert stamps == [10, 20, 30]
        np.testing.assert_allclose(poses[2][:3, 3], [0.0, -0.2, 0.0], atol=1e-9)  # x right -> -y left in map

        assert ros.call(Trigger, "/reset", Trigger.Request()).success
        assert len(node.map_state) == 0
        refused = ros.call(Trigger, "/save_map", Trigger.Request())
        assert not refused.success and refused.message.startswith("nothing to save: no frame since the start "
                                                                  "or the last reset")
        assert read_tum(tmp_path / "maps" / "trajectory.tum")[0] == [10, 20, 30]  # the saved map stays
        feed(ros, node, images, [image_message(random_image(), 40)])
        ros.wait_for(lambda: session.resets == 1, TIMEOUT_S, "session reset before the next frame")
    finally:
        ros.remove_node(node)


def test_save_map_reports_an_unwritable_folder(ros, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    node, _ = start(ros, {"map.save_dir": str(blocker / "sub")})
    try:
        images = ros.publisher(Image, "/image")
        feed(ros, node, images, [image_message(random_image(), stamp) for stamp in (1, 2)])
        ros.wait_for(lambda: node.map_state.poses == 2, TIMEOUT_S, "two processed frames")
        response = ros.call(Trigger, "/save_map", Trigger.Request())
        assert not response.success and "cannot write" in response.message
    finally:
        ros.remove_node(node)


def test_stamp_going_back_and_step_failures_reset_and_go_on(ros):
    session = FakeSession(fail_at=4)
    node, _ = start(ros, {}, session)
    try:
        odometry = ros.listen(Odometry, "/odometry")
        wait_matched(ros, node.outputs[topics.ODOMETRY])
        images = ros.publisher(Image, "/image")
        stamps = (100, 200, 300, 50, 60, 70, 80)
        feed(ros, node, images, [image_message(random_image(), stamp) for stamp in stamps])
        ros.wait_for(lambda: len(session.pushed) == 7 and node.idle, TIMEOUT_S, "all frames pushed")
        assert session.resets == 2  # the stamp going back (50), the failed step (60)
        assert node.diagnostics.errors == 1
        ros.wait_for(lambda: len(odometry) == 5, TIMEOUT_S, "odometry of the frames after the resets")
        assert [messages.to_nanoseconds(m.header.stamp) for m in odometry] == [100, 200, 300, 70, 80]
        assert [s for s, _ in node.map_state.trajectory()] == [70, 80]
    finally:
        ros.remove_node(node)


@pytest.mark.parametrize(("policy", "expected"), [("ignore", [1, 2, 3, 4]),
                                                  ("republish", [1, 2, 2, 3, 3, 4])])
def test_revisions_are_ignored_or_republished(ros, policy, expected):
    node, _ = start(ros, {"output.revisions": policy}, FakeSession(revise_every=1))
    try:
        odometry = ros.listen(Odometry, "/odometry")
        wait_matched(ros, node.outputs[topics.ODOMETRY])
        images = ros.publisher(Image, "/image")
        feed(ros, node, images, [image_message(random_image(), stamp) for stamp in (1, 2, 3, 4)])
        ros.wait_for(lambda: len(odometry) == len(expected), TIMEOUT_S, f"{policy}: odometry")
        assert sorted(messages.to_nanoseconds(m.header.stamp) for m in odometry) == expected
        assert [s for s, _ in node.map_state.trajectory()] == [1, 2, 3, 4]
    finally:
        ros.remove_node(node)


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"model.image_width": 100}, "not a valid step"),
    ({"output.depth.encoding": "8UC1"}, "not one of"),
    ({"tf.publish_map_to_camera": True}, "two parents"),
    ({"window.mode": "online", "window.overlap": 5, "model.num_scale_frames": 2}, "window_overlap"),
])
def test_invalid_parameters_stop_the_start(ros, overrides, reason):
    with pytest.raises(SettingsError, match=reason):
        start(ros, overrides, name="invalid")


def test_parameter_changes_are_checked_and_applied(ros):
    node, _ = start(ros)
    try:
        refused = node.set_parameters([Parameter("output.points.frame", value="world")])[0]
        assert not refused.successful and "not one of camera, map" in refused.reason
        read_only = node.set_parameters([Parameter("model.image_width", value=140)])[0]
        assert not read_only.successful and "read-only" in read_only.reason
        assert node.set_parameters([Parameter("output.points.frame", value="map")])[0].successful
        assert node.values["output.points.frame"] == "map"
        assert node.set_parameters([Parameter("output.map.voxel_size", value=1)])[0].successful
        assert node.map_state.voxel_size == 1.0
    finally:
        ros.remove_node(node)


def test_bad_messages_are_rejected_without_killing_the_node(ros):
    node, session = start(ros, {"diagnostics.period": 0.0})
    try:
        images = ros.publisher(Image, "/image")
        good = random_image()
        unknown = image_message(good, 1, encoding="8UC3")
        empty = Image(header=messages.header(2, FRAME), height=0, width=0, encoding="rgb8")
        short = image_message(good, 3)
        short.data = bytes(good.tobytes()[:-5])
        no_frame = image_message(good, 4, frame_id="")
        feed(ros, node, images, [unknown, empty, short, no_frame, image_message(good, 5),
                                 image_message(good, 6)])
        ros.wait_for(lambda: len(session.pushed) == 2, TIMEOUT_S, "the good frames processed")
        assert session.pushed == [5, 6] and node.diagnostics.rejected == 4
        reports = ros.listen(DiagnosticArray, "/diagnostics")
        wait_matched(ros, node.outputs[topics.DIAGNOSTICS])
        node._publish_diagnostics()  # what the housekeeping timer does, once
        ros.wait_for(lambda: reports, TIMEOUT_S, "the diagnostics report")
        status = reports[0].status[0]
        assert status.level == DiagnosticStatus.WARN  # 4 of 6 lost: above diagnostics.max_drop_rate (0.5)
        assert status.message == ("4 of 6 images dropped or rejected since the last report (67%, more than "
                                  "50%)")
    finally:
        ros.remove_node(node)


def test_image_size_must_match_camera_info(ros):
    node, session = start(ros)
    try:
        infos = ros.publisher(CameraInfo, "/camera_info")
        for stamp in (1, 2):
            infos.publish(CameraInfo(header=messages.header(stamp, FRAME), width=64, height=48))
        ros.wait_for(lambda: node.camera_info_sync.latest_stamp_ns == 2, TIMEOUT_S, "camera_info received")
        images = ros.publisher(Image, "/image")
        feed(ros, node, images, [image_message(random_image(32, 24), 1),
                                 image_message(random_image(64, 48), 2)])
        ros.wait_for(lambda: session.pushed == [2], TIMEOUT_S, "the matching frame processed")
        assert node.diagnostics.rejected == 1
    finally:
        ros.remove_node(node)


def test_map_frame_clouds_and_odom_only_odometry(ros):
    # No map frame published: map-side outputs go to odom.
    node, _ = start(ros, {"output.points.frame": "map", "tf.publish_map_to_odom": False,
                          "frames.base": "base", "output.depth.encoding": "16UC1"})
    try:
        clouds = ros.listen(PointCloud2, "/points")
        odometry = ros.listen(Odometry, "/odometry")
        depth = ros.listen(Image, "/depth/image")
        for publisher in [node.outputs[t] for t in (topics.POINTS, topics.ODOMETRY, topics.DEPTH)]:
            wait_matched(ros, publisher)
        rgb = random_image()
        feed(ros, node, ros.publisher(Image, "/image"), [image_message(rgb, stamp) for stamp in (1, 2)])
        ros.wait_for(lambda: len(clouds) == len(odometry) == len(depth) == 2, TIMEOUT_S, "outputs")
        # No base on TF: the camera is tracked, levelled (x forward, y left): its move along optical x is -y.
        assert {(m.header.frame_id, m.child_frame_id) for m in odometry} == {("odom", FRAME)}
        assert odometry[1].pose.pose.position.y == pytest.approx(-0.1)
        assert clouds[1].header.frame_id == "odom"
        expected = fake_result(1, 2, rgb)
        want, _ = messages.cloud_points(expected, node._worlds.world.from_session, 2, 1.0)
        np.testing.assert_allclose(messages.unpack_point_cloud(clouds[1])[0], want, atol=1e-5)
        assert depth[0].encoding == "16UC1" and np.frombuffer(bytes(depth[0].data), "<u2")[1] == 2000
    finally:
        ros.remove_node(node)


class GatedSession(FakeSession):
    """A FakeSession whose push of ``gated_stamp`` waits for ``gate``; it notes any ``stats`` call made while
    a push runs (the executor calling into the session under the worker)."""

    def __init__(self, gated_stamp: int, **options: object) -> None:
        super().__init__(**options)
        self.gated_stamp = gated_stamp
        self.gate = threading.Event()
        self.at_gate = threading.Event()
        self.inside_push = threading.Event()
        self.stats_during_push = 0

    def push(self, image: np.ndarray, stamp_ns: int) -> list:
        self.inside_push.set()
        try:
            if stamp_ns == self.gated_stamp:
                self.at_gate.set()
                assert self.gate.wait(TIMEOUT_S), "the test never opened the gate"
            return super().push(image, stamp_ns)
        finally:
            self.inside_push.clear()

    def stats(self):
        self.stats_during_push += self.inside_push.is_set()
        return super().stats()


class PrepareRecordingSession(GatedSession):
    """Notes each ``prepare``: the thread it ran on and whether a step was running meanwhile."""

    def __init__(self, gated_stamp: int, **options: object) -> None:
        super().__init__(gated_stamp, **options)
        self.prepare_threads: list[str] = []
        self.prepared_during_push = 0

    def prepare(self, image: np.ndarray) -> np.ndarray:
        self.prepare_threads.append(threading.current_thread().name)
        self.prepared_during_push += self.inside_push.is_set()
        return super().prepare(image)


def test_the_next_frame_is_prepared_while_the_worker_steps(ros):
    session = PrepareRecordingSession(gated_stamp=1, num_scale_frames=1)
    node, _ = start(ros, session=session)
    try:
        odometry = ros.listen(Odometry, "/odometry")
        wait_matched(ros, node.outputs[topics.ODOMETRY])
        feed_stamps(ros, node, [1])
        ros.wait_for(session.at_gate.is_set, TIMEOUT_S, "the worker inside the step of frame 1")
        feed_stamps(ros, node, [2])
        ros.wait_for(lambda: session.prepared_during_push == 1, TIMEOUT_S,
                     "frame 2 prepared beside the blocked step of frame 1")
        session.gate.set()
        ros.wait_for(lambda: len(odometry) == 2, TIMEOUT_S, "odometry of both frames")
        assert odometry_stamps(odometry) == [1, 2]
        assert "gct_stream_worker" not in session.prepare_threads and len(session.prepare_threads) == 2
    finally:
        session.gate.set()
        ros.remove_node(node)


def test_the_worker_steps_the_next_frame_while_a_frame_is_published_in_order(ros):
    session = FakeSession(num_scale_frames=1)
    node, _ = start(ros, session=session)
    publisher = node.outputs[topics.ODOMETRY]
    release, publishing, threads = threading.Event(), threading.Event(), []
    publish = publisher.publish

    def slow_publish(message: Odometry) -> None:
        threads.append(threading.current_thread().name)
        if messages.to_nanoseconds(message.header.stamp) == 1:
            publishing.set()
            assert release.wait(TIMEOUT_S), "the test never released the publisher"
        publish(message)

    publisher.publish = slow_publish
    try:
        odometry = ros.listen(Odometry, "/odometry")
        wait_matched(ros, publisher)
        feed_stamps(ros, node, [1, 2, 3])
        ros.wait_for(lambda: publishing.is_set() and len(session.pushed) == 3, TIMEOUT_S,
                     "frames 2 and 3 stepped while frame 1 is being published")
        release.set()
        ros.wait_for(lambda: len(odometry) == 3, TIMEOUT_S, "odometry of every frame")
        assert odometry_stamps(odometry) == [1, 2, 3]
        assert set(threads) == {"gct_stream_publisher"}
    finally:
        release.set()
        ros.remove_node(node)


def test_a_failed_publish_is_logged_and_the_next_frame_is_published(ros, capfd):
    session = FakeSession(num_scale_frames=1)
    node, _ = start(ros, session=session)
    publisher = node.outputs[topics.ODOMETRY]
    publish = publisher.publish

    def failing_publish(message: Odometry) -> None:
        if messages.to_nanoseconds(message.header.stamp) == 1:
            raise RuntimeError("publish failed (simulated)")
        publish(message)

    publisher.publish = failing_publish
    try:
        odometry = ros.listen(Odometry, "/odometry")
        wait_matched(ros, publisher)
        feed_stamps(ros, node, [1, 2])
        ros.wait_for(lambda: len(odometry) == 1 and node.idle, TIMEOUT_S, "odometry of frame 2")
        assert odometry_stamps(odometry) == [2] and node.diagnostics.errors == 1
        log = capfd.readouterr().err
        assert "publishing a frame failed: RuntimeError('publish failed (simulated)')" in log
    finally:
        ros.remove_node(node)


def odometry_stamps(received: list) -> list[int]:
    return [messages.to_nanoseconds(m.header.stamp) for m in received]


def feed_stamps(ros: RosHarness, node: GctStreamNode, stamps: list[int]) -> None:
    feed(ros, node, ros.publisher(Image, "/image"), [image_message(random_image(), s) for s in stamps])


def start_with_a_long_scale_phase(ros: RosHarness) -> tuple[GctStreamNode, FakeSession, list]:
    """A node whose session waits for 3 scale frames, and the odometry it publishes."""
    node, session = start(ros, session=FakeSession(num_scale_frames=3))
    odometry = ros.listen(Odometry, "/odometry")
    wait_matched(ros, node.outputs[topics.ODOMETRY])
    return node, session, odometry


def test_frames_waiting_for_the_scale_phase_are_answered_when_the_stamp_goes_back(ros):
    node, session, odometry = start_with_a_long_scale_phase(ros)
    try:
        feed_stamps(ros, node, [100, 200, 50, 60, 70])
        ros.wait_for(lambda: len(odometry) == 5, TIMEOUT_S, "odometry of every frame")
        assert odometry_stamps(odometry) == [100, 200, 50, 60, 70]
        assert session.resets == 1 and session.dropped == 0
        assert [stamp for stamp, _ in node.map_state.trajectory()] == [50, 60, 70]
    finally:
        ros.remove_node(node)


def test_a_reset_answers_the_waiting_frames_but_keeps_them_out_of_the_new_map(ros):
    node, session, odometry = start_with_a_long_scale_phase(ros)
    try:
        images = ros.publisher(Image, "/image")
        feed(ros, node, images, [image_message(random_image(), stamp) for stamp in (100, 200)])
        ros.wait_for(lambda: node.idle, TIMEOUT_S, "both frames pushed")
        assert ros.call(Trigger, "/reset", Trigger.Request()).success
        feed(ros, node, images, [image_message(random_image(), 300)])
        ros.wait_for(lambda: len(odometry) == 2, TIMEOUT_S, "odometry of the two waiting frames")
        assert odometry_stamps(odometry) == [100, 200] and session.dropped == 0
        ros.wait_for(lambda: node.idle, TIMEOUT_S, "the frame after the reset pushed")
        assert node.map_state.poses == 0 and len(node.map_state) == 0
    finally:
        ros.remove_node(node)


def test_a_reset_during_a_step_keeps_that_frame_out_of_the_new_map(ros):
    session = GatedSession(gated_stamp=3, num_scale_frames=1)
    node, _ = start(ros, session=session)
    try:
        feed_stamps(ros, node, [1, 2, 3])
        ros.wait_for(session.at_gate.is_set, TIMEOUT_S, "the worker inside the step of frame 3")
        assert ros.call(Trigger, "/reset", Trigger.Request()).success
        session.gate.set()
        ros.wait_for(lambda: node.idle, TIMEOUT_S, "the step of frame 3 done")
        assert node.map_state.poses == 0 and len(node.map_state) == 0
    finally:
        session.gate.set()
        ros.remove_node(node)


def test_diagnostics_never_call_the_session_while_the_worker_is_inside_it(ros):
    session = GatedSession(gated_stamp=2, num_scale_frames=1)
    node, _ = start(ros, session=session)
    try:
        feed_stamps(ros, node, [1, 2])
        ros.wait_for(session.at_gate.is_set, TIMEOUT_S, "the worker inside the step of frame 2")
        node._publish_diagnostics()  # what the housekeeping timer does on the executor thread
        session.gate.set()
        ros.wait_for(lambda: node.idle, TIMEOUT_S, "the step of frame 2 done")
        assert session.stats_during_push == 0
    finally:
        session.gate.set()
        ros.remove_node(node)


class WarningSession(FakeSession):
    """Logs through Python ``logging`` as the engine does on a size change."""

    def push(self, image: np.ndarray, stamp_ns: int) -> list:
        logging.getLogger("gct_stream_ros.stream.session").warning("input size changed (stamp %d)", stamp_ns)
        return super().push(image, stamp_ns)


def test_engine_warnings_reach_rosout_under_the_node_name(ros):
    node, _ = start(ros, session=WarningSession())
    try:
        rosout = ros.listen(Log, "/rosout", qos=100)
        ros.wait_for(lambda: node.get_publishers_info_by_topic("/rosout") != [], TIMEOUT_S, "rosout")
        feed_stamps(ros, node, [7])
        ros.wait_for(lambda: any(m.msg == "input size changed (stamp 7)" for m in rosout), TIMEOUT_S,
                     "the engine's warning on /rosout")
        (line,) = [m for m in rosout if m.msg == "input size changed (stamp 7)"]
        assert line.name == "gct" and line.level == Log.WARN
    finally:
        ros.remove_node(node)


def test_save_map_takes_a_folder_pattern_per_call(ros, tmp_path):
    node, _ = start(ros, {"map.save_dir": str(tmp_path / "maps-%Y")}, FakeSession(num_scale_frames=1))
    try:
        feed_stamps(ros, node, [1])
        ros.wait_for(lambda: node.map_state.poses == 1, TIMEOUT_S, "one frame in the trajectory")
        year = time.strftime("%Y")
        response = ros.call(Trigger, "/save_map", Trigger.Request())
        assert response.success, response.message
        assert (tmp_path / f"maps-{year}" / "map.ply").is_file()
        assert (tmp_path / f"maps-{year}" / "trajectory.tum").is_file()
    finally:
        ros.remove_node(node)


def test_shutdown_reports_the_frames_left_waiting(ros, capfd):
    node, _ = start(ros, session=FakeSession(num_scale_frames=3))
    feed_stamps(ros, node, [1, 2])
    ros.wait_for(lambda: node.idle, TIMEOUT_S, "both frames pushed")
    ros.remove_node(node)
    assert "shutdown: 2 frame(s) waiting for the scale phase were not processed" in capfd.readouterr().err
