"""The node on the real streaming engine (tiny preset, random weights, small images), raw and compressed
input, and the node as a process: start-up summary, SIGINT/SIGTERM, invalid parameters."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from ros_fixtures import RosHarness

pytestmark = pytest.mark.ros

from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, PointCloud2  # noqa: E402

from gct_stream_ros.ros import messages, topics  # noqa: E402
from gct_stream_ros.ros.node import GctStreamNode  # noqa: E402
from gct_stream_ros.ros.session import build_session  # noqa: E402
from gct_stream_ros.stream.synthetic import SyntheticScene  # noqa: E402

ENGINE = {"model.image_width": 70, "model.num_scale_frames": 2, "window.overlap": 1, "input.qos": "reliable",
          "queue.policy": "all", "output.points.decimation": 1}
TIMEOUT_S = 30.0
FRAMES = SyntheticScene(seed=1).render_sequence(4, 96, 72)


class RecordingSession:
    """The real session, keeping what it returned so the test can compare the published messages."""

    def __init__(self, config) -> None:
        self.session = build_session(config)
        self.results = []

    def prepare(self, image):
        return self.session.prepare(image)

    def push_prepared(self, prepared, stamp_ns):
        results = self.session.push_prepared(prepared, stamp_ns)
        self.results += results
        return results

    def reset(self) -> None:
        self.session.reset()

    def stats(self):
        return self.session.stats()


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(domain_id=172)
    yield harness
    harness.close()


def _raw(frame) -> Image:
    message = Image(header=messages.header(frame.stamp_ns, "cam"), height=frame.image.shape[0],
                    width=frame.image.shape[1], encoding="rgb8", step=frame.image.shape[1] * 3)
    message.data = frame.image.tobytes()
    return message


def _compressed(frame) -> CompressedImage:
    ok, data = cv2.imencode(".png", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(header=messages.header(frame.stamp_ns, "cam"), format="rgb8; png compressed rgb8",
                           data=data.tobytes())


@pytest.mark.parametrize(("transport", "topic", "kind", "encode"), [
    ("raw", "/image", Image, _raw), ("compressed", "/image/compressed", CompressedImage, _compressed)])
def test_real_engine_outputs_match_its_results(ros, transport, topic, kind, encode):
    recorder = {}

    def factory(config):
        recorder["session"] = RecordingSession(config)
        return recorder["session"]

    node = ros.add_node(functools.partial(GctStreamNode, "gct_real", session_factory=factory),
                        {**ENGINE, "input.transport": transport})
    try:
        clouds = ros.listen(PointCloud2, "/points")
        odometry = ros.listen(Odometry, "/odometry")
        depth = ros.listen(Image, "/depth/image")
        publishers = [node.outputs[t] for t in (topics.POINTS, topics.DEPTH, topics.ODOMETRY)]
        ros.wait_for(lambda: all(p.get_subscription_count() for p in publishers), TIMEOUT_S, "matched")
        images = ros.publisher(kind, topic)
        for frame in FRAMES:
            images.publish(encode(frame))
            ros.wait_for(lambda f=frame: node.diagnostics.received > f.index, TIMEOUT_S, "image received")
        ros.wait_for(lambda: len(clouds) == len(odometry) == len(depth) == len(FRAMES), TIMEOUT_S, "outputs")
        results = recorder["session"].results
        assert [r.stamp_ns for r in results] == [f.stamp_ns for f in FRAMES]
        assert [messages.to_nanoseconds(m.header.stamp) for m in clouds] == [f.stamp_ns for f in FRAMES]
        assert (depth[0].height, depth[0].width) == results[0].depth.shape == (56, 70)
        for cloud, result in zip(clouds, results):
            want, _ = messages.cloud_points(result, np.linalg.inv(result.pose_c2w), 1, 1.0)
            got, _ = messages.unpack_point_cloud(cloud)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        position = odometry[-1].pose.pose.position
        assert np.isfinite([position.x, position.y, position.z]).all()
    finally:
        ros.remove_node(node)


def _node_process(*parameters: str) -> subprocess.Popen:
    environment = {**os.environ, "ROS_DOMAIN_ID": "173", "PYTHONUNBUFFERED": "1"}
    arguments = ["model.preset:=tiny", "model.checkpoint:=''", "model.device:=cpu", "model.image_width:=70",
                 "model.num_scale_frames:=2", "window.overlap:=1", *parameters]
    command = [sys.executable, "-m", "gct_stream_ros.ros.node", "--ros-args"]
    for argument in arguments:
        command += ["-p", argument]
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_for_line(process: subprocess.Popen, text: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if text in line:
            return line
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"{text!r} not printed; output: {''.join(seen)}")


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_process_logs_its_summary_and_stops_on_signals(signal_number):
    process = _node_process()
    summary = _wait_for_line(process, "listening on")
    assert "model tiny (random weights) on cpu float32, input width 70" in summary
    started = time.monotonic()
    process.send_signal(signal_number)
    output, _ = process.communicate(timeout=5.0)
    assert process.returncode == 0, output
    assert time.monotonic() - started < 2.0


def test_process_refuses_invalid_parameters():
    process = _node_process("output.depth.encoding:=8UC1")
    line = _wait_for_line(process, "invalid parameters")
    assert "output.depth.encoding='8UC1' is not one of 32FC1, 16UC1" in line
    assert process.wait(timeout=5.0) == 2
