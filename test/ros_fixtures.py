"""Shared pieces of the ROS node tests: a stand-in session, results, and an in-process ROS harness.

Each test module gets its own ``rclpy.Context`` on its own DDS domain so that tests running at
the same time on this machine do not hear each other.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import numpy as np
import pytest

from gct_stream_ros.cache.base import CacheStats
from gct_stream_ros.mapping.quaternion import matrix_from_quaternion
from gct_stream_ros.stream.result import FrameResult, FrameType
from gct_stream_ros.stream.stats import SessionStats, StepTimes

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.publisher import Publisher  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

TINY = {"model.preset": "tiny", "model.checkpoint": "", "model.device": "cpu"}
STEP = 0.1
"""How far the stand-in camera moves per frame (along its optical x axis)."""
DISCOVERY_TIMEOUT_S = 20.0


def fake_result(index: int, stamp_ns: int, image: np.ndarray, frame_type: FrameType = FrameType.KEYFRAME,
                sequence: int = 0, revision: bool = False) -> FrameResult:
    """A geometrically consistent result: a fronto-parallel plane 2 units away, the camera moving along x."""
    height, width = image.shape[:2]
    intrinsics = np.array([[width, 0.0, width / 2], [0.0, width, height / 2], [0.0, 0.0, 1.0]])
    pose = np.eye(4)
    pose[0, 3] = STEP * index
    depth = np.full((height, width), 2.0, dtype=np.float32)
    depth[0, 0] = 0.0  # one invalid pixel
    v, u = np.mgrid[0:height, 0:width]
    camera = np.stack([(u - width / 2) / width * depth, (v - height / 2) / width * depth, depth], axis=-1)
    world = (camera + pose[:3, 3]).astype(np.float32)
    world[0, 0] = np.nan
    confidence = np.linspace(1.0, 5.0, height * width, dtype=np.float32).reshape(height, width)
    return FrameResult(index=index, stamp_ns=stamp_ns, pose_c2w=pose, intrinsics=intrinsics,
                       intrinsics_input=intrinsics, depth=depth, depth_conf=confidence, image=image.copy(),
                       frame_type=frame_type, sequence=sequence, revision=revision, world_points=world,
                       world_points_conf=confidence)


class FakeSession:
    """Behaves like ``StreamSession`` from the outside: nothing until ``num_scale_frames`` frames arrived,
    then their results at once, then one result per frame. ``step_delay_s`` makes it slow, ``fail_at``
    makes the push of that frame index raise, ``revise_every`` adds a revision of the previous frame."""

    def __init__(self, config: object = None, num_scale_frames: int = 2, step_delay_s: float = 0.0,
                 fail_at: int | None = None, revise_every: int = 0) -> None:
        self.num_scale_frames = num_scale_frames
        self.step_delay_s = step_delay_s
        self.fail_at = fail_at
        self.revise_every = revise_every
        self.pushed: list[int] = []
        self.resets = 0
        self.dropped = 0
        self.sequence = 0
        self._pending: list[tuple[int, int, np.ndarray]] = []
        self._emitted: list[FrameResult] = []
        self._times = StepTimes()

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The node prepares on its executor thread: here the image stands for its model input."""
        return image

    def push_prepared(self, prepared: np.ndarray, stamp_ns: int) -> list[FrameResult]:
        return self.push(prepared, stamp_ns)

    def push(self, image: np.ndarray, stamp_ns: int) -> list[FrameResult]:
        index = len(self.pushed)
        self.pushed.append(stamp_ns)
        time.sleep(self.step_delay_s)
        if index == self.fail_at:
            raise RuntimeError("CUDA out of memory (simulated)")
        self._times.record(1.0 + index)
        self._pending.append((index, stamp_ns, image))
        if len(self._pending) + len(self._emitted) < self.num_scale_frames and not self._emitted:
            return []
        results = [fake_result(i, s, im, FrameType.SCALE if not self._emitted else FrameType.KEYFRAME,
                               self.sequence) for i, s, im in self._pending]
        self._pending = []
        if self.revise_every and index % self.revise_every == 0 and self._emitted:
            previous = self._emitted[-1]
            results.insert(0, fake_result(previous.index, previous.stamp_ns, previous.image,
                                          sequence=self.sequence, revision=True))
        self._emitted += [r for r in results if not r.revision]
        return results

    def flush(self) -> list[FrameResult]:
        """The waiting frames' results now, as a shorter scale phase."""
        results = [fake_result(i, s, im, FrameType.SCALE, self.sequence) for i, s, im in self._pending]
        self._pending = []
        self._emitted += results
        return results

    def reset(self) -> None:
        self.resets += 1
        self.sequence += 1
        self.dropped += len(self._pending)
        self._pending = []
        self._emitted = []

    def stats(self) -> SessionStats:
        emitted = len(self._emitted)
        cache = CacheStats(frames_stored=emitted, frames_evicted=0, tokens_per_layer=[10 * emitted],
                           bytes_allocated=4096, camera_head_bytes=512)
        return SessionStats(frames_pushed=len(self.pushed), frames_emitted=emitted,
                            frames_dropped=self.dropped, frames_pending=len(self._pending),
                            revisions=0, keyframes=emitted,
                            sequence=self.sequence, window=0, frames_stored=emitted, step_times=self._times,
                            cache=cache, device="cpu", dtype="float32")


class SequenceSession(FakeSession):
    """A stand-in whose poses restart at identity with every sequence, as the engine's do."""

    def __init__(self) -> None:
        super().__init__()
        self._first_index = 0

    def push(self, image: np.ndarray, stamp_ns: int):
        results = super().push(image, stamp_ns)
        for result in results:
            result.pose_c2w = result.pose_c2w.copy()
            result.pose_c2w[0, 3] -= STEP * self._first_index
        return results

    def reset(self) -> None:
        super().reset()
        self._first_index = len(self.pushed)


def fail_take_on_sigint() -> None:
    """Fail as rclpy's take does when SIGINT meets it: Python runs the process's SIGINT handler at the
    take's next bytecode, while rclpy's context is still up, and pybind turns its KeyboardInterrupt into a
    RuntimeError (ros/interrupts.py)."""
    try:
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    except KeyboardInterrupt:
        assert rclpy.ok()
    raise RuntimeError("Unable to convert call argument '0' to Python object")


def odometry_matrix(message) -> np.ndarray:
    """4x4 of a ``nav_msgs/Odometry``'s pose."""
    pose = message.pose.pose
    matrix = np.eye(4)
    matrix[:3, :3] = matrix_from_quaternion(np.array([pose.orientation.x, pose.orientation.y,
                                                      pose.orientation.z, pose.orientation.w]))
    matrix[:3, 3] = (pose.position.x, pose.position.y, pose.position.z)
    return matrix


def random_image(width: int = 32, height: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)




class RosHarness:
    """One context, an executor, a probe node for publishing and listening, and the nodes under test.

    The executor spins only inside ``wait_for`` (in the test's thread), so endpoints can be made and
    destroyed between waits without racing a spinning thread; the nodes' worker threads run freely.
    """

    def __init__(self, domain_id: int) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id,
                   signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.probe = Node("probe", context=self.context)
        self.executor.add_node(self.probe)
        self._nodes: list[Node] = []
        self._endpoints: list = []

    def add_node(self, factory: Callable[..., Node], overrides: dict[str, object] | None = None,
                 **options: object) -> Node:
        parameters = [Parameter(name, value=value) for name, value in {**TINY, **(overrides or {})}.items()]
        node = factory(context=self.context, parameter_overrides=parameters, **options)
        self._nodes.append(node)
        self.executor.add_node(node)
        return node

    def remove_node(self, node: Node) -> None:
        """Destroy ``node`` and every probe endpoint made since: the next test starts with a quiet graph."""
        self.executor.remove_node(node)
        node.destroy_node()
        self._nodes.remove(node)
        for endpoint in self._endpoints:
            if isinstance(endpoint, Publisher):
                self.probe.destroy_publisher(endpoint)
            else:
                self.probe.destroy_subscription(endpoint)
        self._endpoints.clear()

    def listen(self, message_type: type, topic: str, qos: QoSProfile | int = 10) -> list:
        received: list = []
        self._endpoints.append(self.probe.create_subscription(message_type, topic, received.append, qos))
        return received

    def publisher(self, message_type: type, topic: str, subscribers: int = 1):
        publisher = self.probe.create_publisher(
            message_type, topic, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self._endpoints.append(publisher)
        # Both ends must have matched: a volatile reader drops samples of a writer it has not matched yet,
        # even when the writer already counts the reader (seen with Fast DDS: the first frame lost).
        readers = [s for n in self._nodes for s in n.subscriptions if s.topic_name == topic]
        self.wait_for(lambda: publisher.get_subscription_count() >= subscribers
                      and all(r.get_publisher_count() >= 1 for r in readers), DISCOVERY_TIMEOUT_S,
                      f"no subscriber on {topic}")
        return publisher

    def call(self, service_type: type, name: str, request: object, timeout_s: float = 20.0):
        client = self.probe.create_client(service_type, name)
        assert client.wait_for_service(timeout_sec=timeout_s), f"service {name} not available"
        future = client.call_async(request)
        self.wait_for(future.done, timeout_s, f"no response from {name}")
        self.probe.destroy_client(client)
        return future.result()

    def close(self) -> None:
        for node in list(self._nodes):
            self.remove_node(node)
        self.executor.shutdown()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.context)

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str = "condition") -> None:
        """Spin until ``condition()`` holds; fail saying ``what`` did not happen in time."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s: {what}")
            self.executor.spin_once(timeout_sec=0.01)
