"""A separate process that listens to ``/tf`` as any ROS tool would (tf2's listener QoS) and prints what came.

    python test/tf_listener_process.py COUNT [TIMEOUT_S]     (on the domain of ROS_DOMAIN_ID)

Prints ``ready`` once a ``/tf`` publisher has matched its subscription (exits 1 if none does), then
one JSON line per transform (parent, child, stamp_ns, translation xyz, rotation xyzw); exits 0 after
``COUNT`` transforms, 1 when they did not all come within ``TIMEOUT_S`` seconds (default 30).
"""

from __future__ import annotations

import json
import sys
import time

import rclpy
from rclpy.qos import QoSProfile
from tf2_msgs.msg import TFMessage


def main(count: int, timeout_s: float) -> int:
    rclpy.init()
    node = rclpy.create_node("tf_listener_process")
    received = []
    subscription = node.create_subscription(TFMessage, "/tf", lambda m: received.extend(m.transforms),
                                            QoSProfile(depth=100))
    deadline = time.monotonic() + timeout_s
    while subscription.get_publisher_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    if subscription.get_publisher_count() == 0:
        print(f"no /tf publisher matched within {timeout_s} s", flush=True)
        return 1
    print("ready", flush=True)
    while len(received) < count and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    for transform in received:
        t, r = transform.transform.translation, transform.transform.rotation
        stamp = transform.header.stamp
        print(json.dumps({"parent": transform.header.frame_id, "child": transform.child_frame_id,
                          "stamp_ns": stamp.sec * 1_000_000_000 + stamp.nanosec,
                          "translation": [t.x, t.y, t.z], "rotation": [r.x, r.y, r.z, r.w]}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0 if len(received) >= count else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 30.0))
