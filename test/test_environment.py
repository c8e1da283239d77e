"""The ROS 2 core from the Kilted wheels really works here: rclpy exchanges a sensor_msgs/Image."""

from __future__ import annotations

import os
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable (install the 'ros' extra)")
from sensor_msgs.msg import Image  # noqa: E402


def test_publisher_and_subscriber_exchange_an_image():
    os.environ.setdefault("ROS_DOMAIN_ID", "41")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("environment_probe", context=context)
        received: list[Image] = []
        node.create_subscription(Image, "probe_image", received.append, 10)
        publisher = node.create_publisher(Image, "probe_image", 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        sent = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(range(18)))
        sent.header.frame_id = "camera"
        deadline = time.monotonic() + 10.0
        while not received and time.monotonic() < deadline:
            publisher.publish(sent)
            executor.spin_once(timeout_sec=0.1)
        assert received, "no image came back through the middleware"
        got = received[0]
        assert (got.height, got.width, got.encoding, got.header.frame_id) == (2, 3, "rgb8", "camera")
        assert bytes(got.data) == bytes(range(18))
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
