"""SIGINT/SIGTERM while the node (the console entry, tiny preset, in its own process) is busy: images
streaming in, the worker inside model steps, a ``save_map`` just requested. The process ends within 2 s
with exit status 0, the worker joined (no "leaving it behind" warning), and the map files complete:
each is written to a temporary file and renamed, so it is the old file, the new one, or absent, never half.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ros_fixtures import RosHarness, fail_take_on_sigint

pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from gct_stream_ros.mapping.ply import VERTEX, read_ply  # noqa: E402
from gct_stream_ros.mapping.tum import read_tum  # noqa: E402
from gct_stream_ros.ros import messages  # noqa: E402
from gct_stream_ros.ros import node as node_module  # noqa: E402
from gct_stream_ros.stream.synthetic import SyntheticScene  # noqa: E402

DOMAIN_ID = 186
STOP_LIMIT_S = 2.0
START_TIMEOUT_S = 60.0
FRAMES = SyntheticScene(seed=6).render_sequence(8, 168, 126)
PARAMETERS = ["model.preset:=tiny", "model.checkpoint:=''", "model.device:=cpu", "model.image_width:=168",
              "model.num_scale_frames:=2", "window.overlap:=1", "input.qos:=reliable", "queue.policy:=all",
              "output.points.decimation:=1", "output.map.voxel_size:=0.001"]


class NodeProcess:
    """``python -m gct_stream_ros.ros.node`` with its output collected by a thread (never blocks the test)."""

    def __init__(self, save_dir: Path) -> None:
        command = [sys.executable, "-m", "gct_stream_ros.ros.node", "--ros-args"]
        for parameter in [*PARAMETERS, f"map.save_dir:={save_dir}"]:
            command += ["-p", parameter]
        environment = {**os.environ, "ROS_DOMAIN_ID": str(DOMAIN_ID), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def started(self) -> bool:
        assert self.process.poll() is None, f"the node exited early:\n{self.output}"
        return "listening on" in self.output

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=5.0)


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(domain_id=DOMAIN_ID)
    yield harness
    harness.close()


def _stream(ros: RosHarness, publisher, first: int, count: int, period_s: float = 0.05) -> None:
    """Publish ``count`` frames at about 1 / period_s Hz, spinning in between (service answers, outputs)."""
    for index in range(first, first + count):
        frame = FRAMES[index % len(FRAMES)]
        message = Image(header=messages.header(1_000_000 * (index + 1), "cam"), height=frame.image.shape[0],
                        width=frame.image.shape[1], encoding="rgb8", step=frame.image.shape[1] * 3)
        message.data = frame.image.tobytes()
        publisher.publish(message)
        deadline = time.monotonic() + period_s
        while time.monotonic() < deadline:
            ros.executor.spin_once(timeout_sec=period_s / 5)


def _assert_complete_map_files(folder: Path) -> None:
    ply = folder / "map.ply"
    xyz, _ = read_ply(ply)
    header_size = ply.read_bytes().index(b"end_header\n") + len(b"end_header\n")
    assert ply.stat().st_size == header_size + len(xyz) * VERTEX.itemsize
    read_tum(folder / "trajectory.tum")
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_a_busy_node_stops_within_two_seconds_with_complete_map_files(ros, tmp_path, signal_number):
    node = NodeProcess(tmp_path)
    try:
        ros.wait_for(node.started, START_TIMEOUT_S, "the node's start-up summary")
        odometry = ros.listen(Odometry, "/odometry")
        images = ros.publisher(Image, "/image")
        _stream(ros, images, 0, 10)
        ros.wait_for(lambda: len(odometry) >= 4, START_TIMEOUT_S, "the node's first outputs")

        saved = ros.call(Trigger, "/save_map", Trigger.Request())
        assert saved.success, saved.message
        umask = os.umask(0)
        os.umask(umask)
        assert (tmp_path / "map.ply").stat().st_mode & 0o777 == 0o666 & ~umask  # 0644 with the usual umask
        _assert_complete_map_files(tmp_path)

        client = ros.probe.create_client(Trigger, "/save_map")
        assert client.wait_for_service(timeout_sec=5.0)
        client.call_async(Trigger.Request())  # in flight when the signal comes
        _stream(ros, images, 10, 2)
        signalled = time.monotonic()
        node.process.send_signal(signal_number)
        node.process.wait(timeout=10.0)
        stopped_after = time.monotonic() - signalled
        ros.probe.destroy_client(client)

        assert node.process.returncode == 0, node.output
        assert stopped_after < STOP_LIMIT_S, node.output
        for trouble in ("leaving it behind", "step failed", "Traceback"):
            assert trouble not in node.output, node.output
        _assert_complete_map_files(tmp_path)
    finally:
        node.stop()


class _SpinInterrupted:
    """An executor whose spin fails as rclpy's take does when a signal meets it (seen with messages arriving
    fast, e.g. the node's own /tf). ``how``: "sigint" with rclpy's context still up; "shutdown" after the
    context was shut down (rclpy's SIGTERM handler); "none" with no signal at all."""

    def __init__(self, how: str) -> None:
        self.how = how

    def add_node(self, _node: object) -> None:
        pass

    def spin(self) -> None:
        if self.how == "shutdown":
            rclpy.shutdown()
        if self.how == "sigint":
            fail_take_on_sigint()
        raise RuntimeError("Unable to convert call argument '0' to Python object")


@pytest.mark.parametrize("how", ["sigint", "shutdown", "none"])
def test_an_executor_error_after_a_signal_is_a_clean_stop_and_otherwise_raised(monkeypatch, how):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(DOMAIN_ID))
    monkeypatch.setattr(node_module, "GctStreamNode", lambda: rclpy.create_node("stand_in"))
    monkeypatch.setattr(node_module, "SingleThreadedExecutor", lambda: _SpinInterrupted(how))
    handler = signal.getsignal(signal.SIGINT)
    if how == "none":
        with pytest.raises(RuntimeError, match="call argument"):
            node_module.main([])
    else:
        assert node_module.main([]) == 0
    assert not rclpy.ok()
    assert signal.getsignal(signal.SIGINT) is handler
