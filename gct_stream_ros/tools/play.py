"""Publish a bag's camera topics and ``/clock`` through rclpy: ``ros2 bag play`` for pip-only machines.

On a ROS install prefer ``ros2 bag play BAG --clock``. This player covers what the node needs:
``sensor_msgs/Image``, ``CompressedImage`` and ``CameraInfo`` topics, republished as recorded
(raw CDR, nothing re-encoded) at the recorded pace times ``--rate`` or as fast as possible,
with ``/clock`` following the recording time so ``use_sim_time`` nodes see the bag's time.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from gct_stream_ros.ros.topics import message_class
from gct_stream_ros.stamps import NS_PER_S, split_stamp
from gct_stream_ros.tools.frame_source import CAMERA_INFO_TYPE, IMAGE_TYPES, InputError, open_bag

PLAYABLE_TYPES = (*IMAGE_TYPES, CAMERA_INFO_TYPE)
CLOCK_PERIOD_S = 0.025
"""While waiting for the next message ``/clock`` keeps ticking at 40 Hz, like ``ros2 bag play --clock``."""
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def stamp_message(clock_ns: int) -> Clock:
    message = Clock()
    message.clock.sec, message.clock.nanosec = split_stamp(clock_ns)
    return message


class BagPlayer:
    """Replays one bag's camera topics on ``node``; ``rate=None`` means as fast as possible."""

    def __init__(self, node: Node, bag: Path, rate: float | None = 1.0, topics: Sequence[str] | None = None,
                 publish_clock: bool = True) -> None:
        if rate is not None and rate <= 0:
            raise InputError(f"--rate must be positive, got {rate}")
        self.bag, self.rate = bag, rate
        reader = open_bag(bag)
        try:
            playable = {c.topic: c.msgtype for c in reader.connections if c.msgtype in PLAYABLE_TYPES}
        finally:
            reader.close()
        if topics:
            if missing := sorted(set(topics) - set(playable)):
                raise InputError(f"{bag} has no playable topic {', '.join(missing)}; playable topics: "
                                 f"{', '.join(sorted(playable)) or 'none'}")
            playable = {t: playable[t] for t in topics}
        if not playable:
            raise InputError(f"{bag} has no Image, CompressedImage or CameraInfo topic")
        self.topics = sorted(playable)
        self._publishers = {t: node.create_publisher(message_class(m), t, QOS) for t, m in playable.items()}
        self._clock = node.create_publisher(Clock, "/clock", QOS) if publish_clock else None
        self.published = 0
        self.clock_ns: int | None = None
        """The last ``/clock`` value published."""

    def subscriber_count(self) -> int:
        """Subscriptions matched on the played topics (the sum over topics)."""
        return sum(p.get_subscription_count() for p in self._publishers.values())

    def wait_for_subscribers(self, timeout_s: float, count: int = 1) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.subscriber_count() < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def play(self, loop: bool = False, stop: threading.Event | None = None) -> int:
        """Publish the bag (repeatedly with ``loop``) until done or ``stop`` is set; return messages sent."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self._play_once(stop)
            if not loop:
                break
        return self.published

    def _play_once(self, stop: threading.Event) -> None:
        reader = open_bag(self.bag)
        try:
            connections = [c for c in reader.connections if c.topic in self._publishers]
            start_wall = time.monotonic()
            start_bag: int | None = None
            for connection, recorded_ns, raw in reader.messages(connections=connections):
                start_bag = recorded_ns if start_bag is None else start_bag
                if self.rate is not None:
                    self._wait_for(recorded_ns, start_wall, start_bag, stop)
                if stop.is_set():
                    return
                self._tick(recorded_ns)
                self._publishers[connection.topic].publish(bytes(raw))
                self.published += 1
        finally:
            reader.close()

    def _wait_for(self, recorded_ns: int, start_wall: float, start_bag: int, stop: threading.Event) -> None:
        """Sleep until the message is due, ticking ``/clock`` along the way."""
        while not stop.is_set():
            bag_now = start_bag + int((time.monotonic() - start_wall) * self.rate * NS_PER_S)
            if bag_now >= recorded_ns:
                return
            self._tick(bag_now)
            stop.wait(min((recorded_ns - bag_now) / NS_PER_S / self.rate, CLOCK_PERIOD_S))

    def keep_clock_running(self, seconds: float, stop: threading.Event | None = None) -> None:
        """Tick ``/clock`` on past the end of the bag at the playback rate for ``seconds`` of wall time.

        Sim-time nodes stop their timers (map, diagnostics) when ``/clock`` stops; this lets them run
        once more.
        """
        if self.clock_ns is None:
            return
        stop = stop or threading.Event()
        start_wall, start_bag = time.monotonic(), self.clock_ns
        while not stop.wait(CLOCK_PERIOD_S) and (elapsed := time.monotonic() - start_wall) < seconds:
            self._tick(start_bag + int(elapsed * (self.rate or 1.0) * NS_PER_S))

    def _tick(self, clock_ns: int) -> None:
        if self._clock is not None:
            self._clock.publish(stamp_message(clock_ns))
            self.clock_ns = clock_ns


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gct_stream_play",
        description="Publish a bag's image, compressed image and camera_info topics with /clock (for "
                    "machines without `ros2 bag play`; on a ROS install use `ros2 bag play BAG --clock`).")
    parser.add_argument("bag", type=Path, help="rosbag2 directory (sqlite3 or MCAP) or ROS 1 .bag file")
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    speed.add_argument("--max-speed", action="store_true", help="publish as fast as possible")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC",
                        help="only these topics (default: every playable topic)")
    parser.add_argument("--loop", action="store_true", help="restart at the end until interrupted")
    parser.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv if argv is None else ["gct_stream_play", *argv]
    args = parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    rclpy.init(args=argv)
    node = Node("gct_stream_play")
    try:
        player = BagPlayer(node, args.bag, None if args.max_speed else args.rate, args.topics,
                           publish_clock=not args.no_clock)
        node.get_logger().info(f"playing {', '.join(player.topics)} from {args.bag}")
        player.play(loop=args.loop)
        node.get_logger().info(f"published {player.published} messages")
        return 0
    except InputError as error:
        print(f"gct_stream_play: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
