"""gct_stream_echo: one summary line per message."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from ros_fixtures import RosHarness, fail_take_on_sigint

pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from gct_stream_ros.ros import messages  # noqa: E402
from gct_stream_ros.tools import echo  # noqa: E402
from gct_stream_ros.tools.echo import EchoNode, summarize  # noqa: E402


def test_summaries_name_stamp_frame_and_content():
    image = Image(header=messages.header(1_500_000_000, "cam"), width=4, height=3, encoding="32FC1")
    assert summarize("/depth/image", image) == "/depth/image  1.500000000  cam  4x3 32FC1"
    info = CameraInfo(header=messages.header(0, "cam"), width=4, height=3,
                      k=[2.0, 0, 2, 0, 3.0, 1.5, 0, 0, 1])
    assert summarize("/depth/camera_info", info).endswith("4x3 fx=2.0 fy=3.0")
    cloud = messages.point_cloud(np.zeros((5, 3), np.float32), np.zeros((5, 3), np.uint8), 0, "map")
    assert summarize("/points", cloud).endswith("map  5 points (x,y,z,rgb)")
    pose = np.eye(4)
    pose[:3, 3] = (1, 2, 3)
    odometry = messages.odometry(pose, 0, "map", "cam")
    assert summarize("/odometry", odometry).endswith("cam at (1.000, 2.000, 3.000)")
    assert summarize("/path", messages.path([], 0, "map")).endswith("0 poses")
    report = DiagnosticArray(status=[DiagnosticStatus(name="gct: stream", level=DiagnosticStatus.WARN,
                                                      message="no image")])
    assert summarize("/diagnostics", report) == "/diagnostics  0.000000000  -  gct: stream: WARN no image"


def test_unknown_outputs_are_refused():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ValueError, match="unknown output 'pointz'"):
            EchoNode(["pointz"], context=context)
    finally:
        rclpy.shutdown(context=context)


def test_echo_reports_messages_on_namespaced_topics():
    ros = RosHarness(domain_id=175)
    lines: list[str] = []
    try:
        node = ros.add_node(functools.partial(EchoNode, ["odometry"], lines.append, namespace="/robot"), {})
        publisher = ros.publisher(Odometry, "/robot/odometry")
        publisher.publish(messages.odometry(np.eye(4), 7, "map", "cam"))
        ros.wait_for(lambda: node.received == 1, 5.0, "echo of the odometry")
        assert lines == ["/robot/odometry  0.000000007  map  cam at (0.000, 0.000, 0.000)"]
    finally:
        ros.close()


def test_command_prints_and_stops_after_count():
    ros = RosHarness(domain_id=176)
    command = [sys.executable, "-m", "gct_stream_ros.tools.echo", "--count", "1", "--namespace", "/cam",
               "odometry"]
    process = subprocess.Popen(command, env={**os.environ, "ROS_DOMAIN_ID": "176"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        publisher = ros.probe.create_publisher(Odometry, "/cam/odometry", 10)
        deadline = time.monotonic() + 20.0
        while process.poll() is None and time.monotonic() < deadline:
            publisher.publish(messages.odometry(np.eye(4), 3, "map", "cam"))
            time.sleep(0.05)
        output, _ = process.communicate(timeout=5.0)
        assert process.returncode == 0, output
        assert output.splitlines()[-1] == "/cam/odometry  0.000000003  map  cam at (0.000, 0.000, 0.000)"
    finally:
        process.kill()
        ros.close()


def test_sigint_during_a_take_ends_echo_cleanly_and_restores_the_handler(monkeypatch):
    def spin_once(_node, timeout_sec: float) -> None:
        fail_take_on_sigint()

    monkeypatch.setenv("ROS_DOMAIN_ID", "175")
    monkeypatch.setattr(rclpy, "spin_once", spin_once)
    handler = signal.getsignal(signal.SIGINT)
    assert echo.main(["gct_stream_echo", "odometry"]) == 0
    assert not rclpy.ok()
    assert signal.getsignal(signal.SIGINT) is handler
