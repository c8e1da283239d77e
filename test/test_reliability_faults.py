"""Faults, time jumps and size changes on the real engine (tiny preset, 28-42 px), and start-up failures.

- an out-of-memory or other error inside a model step (raised from the KV cache in the middle of a
  step, after some layers already stored their keys) is logged, the session resets, the node goes on;
- a stamp going backwards (a bag looping) resets the session and the map with a warning;
- an input size change starts a new sequence: outputs switch resolution, map and path restart;
- a missing or wrong checkpoint stops the start naming the file and the missing/unexpected keys;
- invalid parameters are refused at start-up and on ``set_parameters`` with the reason.
"""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ros_fixtures import FakeSession, RosHarness

pytestmark = pytest.mark.ros

from nav_msgs.msg import Odometry, Path  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from gct_stream_ros.ros import messages  # noqa: E402
from gct_stream_ros.ros.node import GctStreamNode  # noqa: E402
from gct_stream_ros.ros.session import build_session  # noqa: E402
from gct_stream_ros.settings import SettingsError  # noqa: E402
from gct_stream_ros.stream.synthetic import SyntheticScene  # noqa: E402

ENGINE = {"model.image_width": 28, "model.num_scale_frames": 2, "window.overlap": 1, "input.qos": "reliable",
          "queue.policy": "all", "cache.sliding_window": 2, "cache.max_frames": 8}
TIMEOUT_S = 20.0
GLOBAL_LAYERS = 4
"""Global attention layers of the tiny preset: one ``attend`` call each per step."""
LISTEN_DEPTH = 1000
"""Subscription history far beyond any burst here, so no output is lost before the test reads it."""
FRAMES = SyntheticScene(seed=3).render_sequence(10, 56, 42)


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(domain_id=182)
    yield harness
    harness.close()


def _image(rgb: np.ndarray, stamp_ns: int) -> Image:
    message = Image(header=messages.header(stamp_ns, "cam"), height=rgb.shape[0], width=rgb.shape[1],
                    encoding="rgb8", step=rgb.shape[1] * 3)
    message.data = rgb.tobytes()
    return message


def _stamps(received: list) -> list[int]:
    return [messages.to_nanoseconds(m.header.stamp) for m in received]


def _start(ros: RosHarness, factory=build_session, overrides: dict | None = None) -> GctStreamNode:
    return ros.add_node(functools.partial(GctStreamNode, "gct_faults", session_factory=factory),
                        {**ENGINE, **(overrides or {})})


def _listen(ros: RosHarness, node: GctStreamNode, message_type: type, topic: str) -> list:
    qos = QoSProfile(depth=LISTEN_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
    received = ros.listen(message_type, topic, qos)
    publisher = node.outputs[topic.lstrip("/")]
    ros.wait_for(lambda: publisher.get_subscription_count() > 0, TIMEOUT_S, f"{topic} matched")
    return received


def _feed(ros: RosHarness, node: GctStreamNode, frames: list[tuple[np.ndarray, int]]) -> None:
    """Publish one image at a time and wait until the worker is done with it (outputs in input order)."""
    publisher = ros.publisher(Image, "/image")
    for count, (rgb, stamp_ns) in enumerate(frames, start=node.diagnostics.received + 1):
        publisher.publish(_image(rgb, stamp_ns))
        ros.wait_for(lambda c=count: node.diagnostics.received >= c and node.worker.processed >= c, TIMEOUT_S,
                     f"frame {count} processed")


def _failing_on(call: int, error: Exception):
    """A session factory: the real session whose KV cache raises ``error`` on its ``call``-th ``attend``."""

    def factory(config):
        session = build_session(config)
        cache = session.network.cache
        attend, calls = cache.attend, itertools.count(1)

        def failing_attend(layer, q, k, v):
            if next(calls) == call:
                raise error
            return attend(layer, q, k, v)

        cache.attend = failing_attend
        return session

    return factory


@pytest.mark.parametrize(("error", "step", "lost"), [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)"), 3, [3]),
    (RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR (simulated)"), 1, [0, 1]),
])
def test_an_error_inside_a_step_resets_the_session_and_the_node_goes_on(ros, capfd, error, step, lost):
    """Step 1 is the scale phase of frames 0 and 1, step n > 1 frame n - 1; the failing step's frames are
    lost, the next two frames form a new scale phase and everything after is published."""
    node = _start(ros, _failing_on((step - 1) * GLOBAL_LAYERS + 2, error))  # the second layer of that step
    try:
        odometry = _listen(ros, node, Odometry, "/odometry")
        stamps = [1_000 + 100 * i for i in range(8)]
        _feed(ros, node, [(frame.image, stamp) for frame, stamp in zip(FRAMES, stamps)])
        expected = [s for i, s in enumerate(stamps) if i not in lost]
        ros.wait_for(lambda: len(odometry) == len(expected), TIMEOUT_S, "odometry of the other frames")
        assert _stamps(odometry) == expected
        assert node.diagnostics.errors == 1 and node._session.stats().sequence == 1
        assert [s for s, _ in node.map_state.trajectory()] == expected[expected.index(stamps[max(lost) + 1]):]
        positions = [m.pose.pose.position for m in odometry]
        assert np.isfinite([[p.x, p.y, p.z] for p in positions]).all()
        log = capfd.readouterr().err
        assert f"step failed, session reset: {type(error).__name__}" in log and "(simulated)" in log
    finally:
        ros.remove_node(node)


def test_a_stamp_going_backwards_resets_the_session_and_the_map_with_a_warning(ros, capfd):
    node = _start(ros)
    try:
        path = _listen(ros, node, Path, "/path")
        first = [(frame.image, 1_000 + 100 * frame.index) for frame in FRAMES[:5]]
        _feed(ros, node, first)
        ros.wait_for(lambda: len(path) == 5, TIMEOUT_S, "the first lap")
        map_points = len(node.map_state)
        assert map_points > 0 and node._session.stats().sequence == 0
        _feed(ros, node, first[:4])  # the bag loops
        ros.wait_for(lambda: len(path) == 9, TIMEOUT_S, "the second lap")
        assert [len(m.poses) for m in path] == [1, 2, 3, 4, 5, 1, 2, 3, 4]
        assert _stamps(path[-1].poses) == [s for _, s in first[:4]]
        assert [s for s, _ in node.map_state.trajectory()] == [s for _, s in first[:4]]
        assert node._session.stats().sequence == 1 and node.diagnostics.errors == 0
        warning = "stamp went backwards (1400 -> 1000 ns; bag restarted?): session and map reset"
        assert warning in capfd.readouterr().err
    finally:
        ros.remove_node(node)


def test_an_input_size_change_starts_a_new_sequence(ros, capfd):
    """64x48 and 32x32 inputs give 42x28 and 42x42 model images: never mixed in one sequence."""
    wide = SyntheticScene(seed=4).render_sequence(4, 64, 48)
    square = SyntheticScene(seed=4).render_sequence(4, 32, 32)
    node = _start(ros, overrides={"model.image_width": 42})
    try:
        depth = _listen(ros, node, Image, "/depth/image")
        path = _listen(ros, node, Path, "/path")
        frames = [(f.image, 1_000 + i) for i, f in enumerate(wide + square)]
        _feed(ros, node, frames)
        ros.wait_for(lambda: len(depth) == len(path) == 8, TIMEOUT_S, "outputs of every frame")
        assert [(m.width, m.height) for m in depth] == [(42, 28)] * 4 + [(42, 42)] * 4
        assert [len(m.poses) for m in path] == [1, 2, 3, 4, 1, 2, 3, 4]
        assert _stamps(depth) == [s for _, s in frames]
        assert node._session.stats().sequence == 1 and node.diagnostics.errors == 0
        assert [s for s, _ in node.map_state.trajectory()] == [s for _, s in frames[4:]]
        assert "new sequence 1 (input size changed): map and path restart" in capfd.readouterr().err
    finally:
        ros.remove_node(node)


@pytest.fixture(scope="module")
def wrong_checkpoints(tmp_path_factory) -> dict[str, str]:
    """Small files that load but do not fit the tiny model: one unknown tensor each."""
    folder = tmp_path_factory.mktemp("checkpoints")
    tensors = {"backbone.not_a_layer.weight": torch.zeros(3, 3)}
    torch.save({"model": tensors}, folder / "wrong.pt")
    save_file(tensors, str(folder / "wrong.safetensors"))
    return {"pt": str(folder / "wrong.pt"), "safetensors": str(folder / "wrong.safetensors"),
            "missing": str(folder / "absent.safetensors")}


@pytest.mark.parametrize("kind", ["missing", "pt", "safetensors"])
def test_a_missing_or_wrong_checkpoint_stops_the_start_naming_the_file_and_keys(ros, wrong_checkpoints, kind):
    path = wrong_checkpoints[kind]
    with pytest.raises(SettingsError) as raised:
        _start(ros, overrides={"model.checkpoint": path})
    message = str(raised.value)
    assert f"model.checkpoint={path!r}" in message
    if kind == "missing":
        assert "checkpoint file not found" in message
    else:
        assert "missing keys" in message and "aggregator." in message
        assert "unexpected keys (1): backbone.not_a_layer.weight" in message


def test_the_node_process_exits_with_the_checkpoint_problem(wrong_checkpoints):
    path = wrong_checkpoints["safetensors"]
    command = [os.path.join(os.path.dirname(sys.executable), "gct_stream_node"), "--ros-args",
               "-p", "model.preset:=tiny", "-p", f"model.checkpoint:={path}", "-p", "model.device:=cpu"]
    done = subprocess.run(command, env={**os.environ, "ROS_DOMAIN_ID": "183"}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"invalid parameters: model.checkpoint={path!r}: checkpoint does not fit the model" in done.stderr
    assert "unexpected keys (1): backbone.not_a_layer.weight" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_cuda_device_on_a_machine_without_cuda_stops_the_process_with_one_line(device):
    command = [sys.executable, "-m", "gct_stream_ros.ros.node", "--ros-args", "-p", "model.preset:=tiny",
               "-p", f"model.device:={device}"]
    done = subprocess.run(command, env={**os.environ, "ROS_DOMAIN_ID": "183"}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"gct_stream_node: invalid parameters: device={device!r} but CUDA is not available on this machine "
        f"(PyTorch {torch.__version__}); use 'cpu' or 'auto' [model.device]"]


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"model.image_width": "wide"}, "model.image_width"),
    ({"model.dtype": "float8"}, "model.dtype='float8' is not one of"),
    ({"cache.max_frames": 3}, "cache_max_frames=3 must be 0 or >="),
    ({"queue.size": 0}, "queue.size"),
    ({"output.map.voxel_size": -1.0}, "output.map.voxel_size"),
    ({"model.image_widht": 112}, r"unknown parameter 'model.image_widht' \(did you mean model.image_width"),
    ({"frames.map": ""}, "frames.map is empty"),
    ({"frames.camera": "/camera"}, "cannot start with '/'"),
    ({"frames.base": "base link"}, "blanks"),
])
def test_invalid_parameters_are_refused_at_start_up_with_the_reason(ros, overrides, reason):
    with pytest.raises(SettingsError, match=reason):
        _start(ros, lambda _config: pytest.fail("no session for invalid parameters"), overrides)


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("output.map.voxel_size", "big", "takes a float"),
    ("output.map.voxel_size", 0.0, "range"),
    ("output.points.decimation", 100, "range"),
    ("output.depth.encoding", "8UC1", "is not one of 32FC1, 16UC1"),
    ("tf.publish_map_to_camera", True, "two parents"),
    ("queue.size", 5, "read-only"),
    ("output.qos", "best_effort", "read-only"),
    ("frames.odom", "odom frame", "blanks"),
])
def test_invalid_parameter_changes_are_refused_with_the_reason(ros, name, value, reason):
    node = _start(ros, lambda _config: FakeSession())
    try:
        before = dict(node.values)
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and reason in result.reason
        assert node.values == before and node.get_parameter(name).value == before[name]
    finally:
        ros.remove_node(node)

