"""``gct_stream_echo``: one line per message on the node's outputs, for machines without ``ros2 topic echo``.

    gct_stream_echo                       # the node's outputs in the root namespace
    gct_stream_echo --namespace /robot --count 20 points odometry

Each line reads ``topic  stamp  frame_id  summary`` (size and encoding, point count, position,
pose count, diagnostic level and message). Subscriptions are best effort (they match reliable
and best-effort publishers alike), except ``map/points``, which is latched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from gct_stream_ros.ros import topics
from gct_stream_ros.ros.interrupts import recorded_sigint
from gct_stream_ros.ros.topics import message_class

OUTPUTS: dict[str, type] = {
    **{topic: message_class(msgtype) for topic, msgtype in topics.OUTPUT_TYPES.items()},
    topics.DIAGNOSTICS: DiagnosticArray,
}
LATCHED_OUTPUTS = frozenset({topics.MAP})
_LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


def _describe(message: object) -> str:
    if isinstance(message, Image):
        return f"{message.width}x{message.height} {message.encoding}"
    if isinstance(message, CameraInfo):
        return f"{message.width}x{message.height} fx={message.k[0]:.1f} fy={message.k[4]:.1f}"
    if isinstance(message, PointCloud2):
        fields = ",".join(field.name for field in message.fields)
        return f"{message.width * message.height} points ({fields})"
    if isinstance(message, Odometry):
        p = message.pose.pose.position
        return f"{message.child_frame_id} at ({p.x:.3f}, {p.y:.3f}, {p.z:.3f})"
    if isinstance(message, Path):
        return f"{len(message.poses)} poses"
    if isinstance(message, DiagnosticArray):
        return "; ".join(f"{status.name}: {_LEVELS.get(ord(status.level), status.level)} {status.message}"
                         for status in message.status)
    return type(message).__name__


def summarize(topic: str, message: object) -> str:
    """``topic  stamp  frame_id  summary`` for one message."""
    header = message.header
    stamp = f"{header.stamp.sec}.{header.stamp.nanosec:09d}"
    return f"{topic}  {stamp}  {header.frame_id or '-'}  {_describe(message)}"


class EchoNode(Node):
    """Subscribes to ``topics`` (relative names resolve in the node's namespace) and reports each message."""

    def __init__(self, topics: Sequence[str], report: Callable[[str], None] = print,
                 **options: object) -> None:
        super().__init__("gct_stream_echo", **options)
        self.received = 0
        self._report = report
        for topic in topics:
            if topic not in OUTPUTS:
                raise ValueError(f"unknown output {topic!r}; known: {', '.join(OUTPUTS)}")
            if topic in LATCHED_OUTPUTS:
                qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            else:
                qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
            reporter = self._reporter(self.resolve_topic_name(topic))
            self.create_subscription(OUTPUTS[topic], topic, reporter, qos)

    def _reporter(self, topic: str) -> Callable[[object], None]:
        def report(message: object) -> None:
            self.received += 1
            self._report(summarize(topic, message))

        return report


def main(argv: Sequence[str] | None = None) -> int:
    arguments = rclpy.utilities.remove_ros_args(list(sys.argv if argv is None else argv))[1:]
    parser = argparse.ArgumentParser(prog="gct_stream_echo", description=__doc__.splitlines()[0])
    parser.add_argument("topics", nargs="*", default=list(OUTPUTS), choices=list(OUTPUTS), metavar="TOPIC",
                        help=f"outputs to echo (default: all of {', '.join(OUTPUTS)})")
    parser.add_argument("--namespace", default="", help="namespace of the gct_stream_node")
    parser.add_argument("--count", type=int, default=0, help="stop after this many messages (0: never)")
    options = parser.parse_args(arguments)
    with recorded_sigint() as sigint:
        rclpy.init(args=argv)
        node = EchoNode(options.topics, namespace=options.namespace or None)
        try:
            with sigint.clean_stop():
                while rclpy.ok() and not (options.count and node.received >= options.count):
                    rclpy.spin_once(node, timeout_sec=0.1)
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
