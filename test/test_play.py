"""The pip-only bag player: pace, /clock, topic selection and its errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not importable")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from gct_stream_ros.stamps import NS_PER_S  # noqa: E402
from gct_stream_ros.tools.camera_bag import write_camera_bag  # noqa: E402
from gct_stream_ros.tools.frame_source import InputError  # noqa: E402
from gct_stream_ros.tools.play import BagPlayer, main  # noqa: E402

DOMAIN_ID = "171"
FRAMES = 8
PERIOD_NS = 100_000_000
START_NS = 1_700_000_000 * NS_PER_S
INTRINSICS = np.array([[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]])
pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("play") / "camera"
    frames = [(START_NS + i * PERIOD_NS, np.full((24, 32, 3), i, np.uint8)) for i in range(FRAMES)]
    write_camera_bag(path, frames, INTRINSICS)
    return path


@pytest.fixture(scope="module")
def context():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_DOMAIN_ID", DOMAIN_ID)
        context = rclpy.Context()
        rclpy.init(context=context)
        yield context
        context.try_shutdown()


class Recorder:
    """Spins a listener node in a thread and keeps (arrival time, message) per topic."""

    def __init__(self, context) -> None:
        self.node = rclpy.create_node("play_listener", context=context)
        self.received: dict[str, list[tuple[float, object]]] = {"image": [], "info": [], "clock": []}
        topics = (("image", Image, "/camera/image_raw"), ("info", CameraInfo, "/camera/camera_info"),
                  ("clock", Clock, "/clock"))
        for key, kind, topic in topics:
            self.node.create_subscription(kind, topic, lambda m, k=key: self._keep(k, m), 100)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _keep(self, key: str, message: object) -> None:
        self.received[key].append((time.monotonic(), message))

    def wait_for(self, key: str, count: int, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received[key]) < count and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def _play(context, bag, rate, topics=None):
    recorder = Recorder(context)
    node = rclpy.create_node("player", context=context)
    try:
        player = BagPlayer(node, bag, rate=rate, topics=topics)
        assert player.wait_for_subscribers(5.0, count=len(player.topics))
        time.sleep(0.3)  # discovery of the /clock subscription too
        player.play()
        recorder.wait_for("image", FRAMES if "/camera/image_raw" in player.topics else 0)
        time.sleep(0.2)
        return player, recorder.received
    finally:
        recorder.close()
        node.destroy_node()


@pytest.mark.parametrize("rate", [2.0, 4.0])
def test_messages_arrive_at_the_recorded_pace_times_the_rate(context, bag, rate):
    player, received = _play(context, bag, rate)
    assert player.published == 2 * FRAMES
    images = received["image"]
    assert [m.header.stamp.sec * NS_PER_S + m.header.stamp.nanosec for _, m in images] == [
        START_NS + i * PERIOD_NS for i in range(FRAMES)]
    assert len(received["info"]) == FRAMES
    span = images[-1][0] - images[0][0]
    expected = (FRAMES - 1) * PERIOD_NS / NS_PER_S / rate
    assert expected * 0.9 < span < expected + 0.15


def test_clock_follows_the_recording_time(context, bag):
    _, received = _play(context, bag, 2.0)
    clock_ns = [m.clock.sec * NS_PER_S + m.clock.nanosec for _, m in received["clock"]]
    assert len(clock_ns) > 2 * FRAMES, "the clock also ticks between messages"
    assert clock_ns == sorted(clock_ns)
    assert clock_ns[0] >= START_NS and clock_ns[-1] == START_NS + (FRAMES - 1) * PERIOD_NS


def test_max_speed_does_not_wait_and_topics_select(context, bag):
    player, received = _play(context, bag, None, topics=["/camera/image_raw"])
    assert player.topics == ["/camera/image_raw"] and player.published == FRAMES
    images = received["image"]
    assert len(images) == FRAMES and not received["info"]
    assert images[-1][0] - images[0][0] < (FRAMES - 1) * PERIOD_NS / NS_PER_S / 2


def test_loop_replays_until_stopped(context, bag):
    node = rclpy.create_node("looper", context=context)
    try:
        player = BagPlayer(node, bag, rate=None, topics=["/camera/camera_info"], publish_clock=False)
        stop = threading.Event()
        thread = threading.Thread(target=player.play, kwargs={"loop": True, "stop": stop})
        thread.start()
        deadline = time.monotonic() + 5.0
        while player.published < 3 * FRAMES and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        thread.join(5.0)
        assert not thread.is_alive() and player.published >= 3 * FRAMES
    finally:
        node.destroy_node()


def test_unknown_topic_lists_the_playable_ones(context, bag):
    node = rclpy.create_node("bad_topic", context=context)
    try:
        expected = "/nope; playable topics: /camera/camera_info, /camera/image_raw$"
        with pytest.raises(InputError, match=expected):
            BagPlayer(node, bag, topics=["/nope"])
        with pytest.raises(InputError, match="rate must be positive"):
            BagPlayer(node, bag, rate=0.0)
    finally:
        node.destroy_node()


def test_cli_reports_an_unreadable_bag_without_traceback(tmp_path, capsys):
    (tmp_path / "metadata.yaml").write_text("not: a bag\n")
    assert main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gct_stream_play: error: cannot read the bag") and "Traceback" not in error


def test_clock_keeps_running_after_the_bag_when_asked(context, bag):
    recorder = Recorder(context)
    node = rclpy.create_node("clock_keeper", context=context)
    try:
        player = BagPlayer(node, bag, rate=None, topics=["/camera/camera_info"])
        assert player.wait_for_subscribers(5.0)
        time.sleep(0.3)
        player.play()
        end_ns = START_NS + (FRAMES - 1) * PERIOD_NS
        assert player.clock_ns == end_ns
        player.keep_clock_running(0.3)
        assert end_ns + 0.2 * NS_PER_S < player.clock_ns < end_ns + 0.5 * NS_PER_S
        time.sleep(0.2)
        latest = max(m.clock.sec * NS_PER_S + m.clock.nanosec for _, m in recorder.received["clock"])
        assert latest == player.clock_ns
    finally:
        recorder.close()
        node.destroy_node()


def test_cli_plays_a_bag_as_fast_as_possible(bag):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_DOMAIN_ID", DOMAIN_ID)
        assert main([str(bag), "--max-speed", "--topics", "/camera/image_raw"]) == 0
    assert not rclpy.ok(), "the player shuts down the context it initialised"
