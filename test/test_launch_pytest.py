"""The launch file for real (ROS installs): the node starts with the tiny preset, takes frames, publishes.

Needs `launch`, `launch_ros` and `launch_pytest` from a ROS distribution and the package installed
(colcon); `test_launch.py` checks the same launch file without them.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

launch_pytest = pytest.importorskip("launch_pytest", reason="launch_pytest not importable")

import rclpy  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from gct_stream_ros.ros import messages  # noqa: E402
from launch import LaunchDescription  # noqa: E402

DOMAIN_ID = "173"
os.environ["ROS_DOMAIN_ID"] = DOMAIN_ID  # before the launch service starts the node
LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "gct_stream.launch.py"
IMAGE_TOPIC = "/test_camera/image_raw"
FRAMES = 12
WIDTH, HEIGHT = 56, 42
PARAMS = """/**:
  ros__parameters:
    model: {image_width: 56, num_scale_frames: 4}
    window: {overlap: 2}
    input: {qos: reliable}
    queue: {policy: all}
"""
pytestmark = pytest.mark.ros


def _params_file() -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        handle.write(PARAMS)
    return handle.name


@launch_pytest.fixture(scope="module")
def launched():
    arguments = {"preset": "tiny", "device": "cpu", "image_topic": IMAGE_TOPIC, "params_file": _params_file()}
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
                                 launch_arguments=arguments.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


def _image(index: int, stamp_ns: int) -> Image:
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    message = Image(header=messages.header(stamp_ns, "camera_optical_frame"), height=HEIGHT, width=WIDTH,
                    encoding="rgb8", step=3 * WIDTH)
    message.data = pixels.tobytes()
    return message


@pytest.mark.launch(fixture=launched)
def test_launched_node_publishes_one_odometry_per_frame_with_the_input_stamps():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("launch_test_probe", context=context)
    received: list[int] = []
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Odometry, "/odometry", lambda m: received.append(messages.to_nanoseconds(
        m.header.stamp)), qos)
    publisher = node.create_publisher(Image, IMAGE_TOPIC, qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 60.0  # the node imports torch and builds the model first
        while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert publisher.get_subscription_count() > 0, "the launched node never subscribed to the image topic"
        stamps = [1_700_000_000_000_000_000 + i * 100_000_000 for i in range(FRAMES)]
        for index, stamp in enumerate(stamps):
            publisher.publish(_image(index, stamp))
            time.sleep(0.1)
        deadline = time.monotonic() + 60.0
        while len(received) < FRAMES and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(received) == stamps
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
