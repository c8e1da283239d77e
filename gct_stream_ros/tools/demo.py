"""gct_stream_demo (``make demo``): the whole ROS pipeline on a synthetic room, offline, on a CPU.

1. renders the synthetic sample sequence and records it as a camera bag (image + camera_info);
2. starts the real node in this process (tiny random-weight model, or ``--checkpoint``);
3. plays the bag into it with ``/clock`` (``gct_stream_play``'s player) while recording every
   output, ``/tf`` included, into a second bag (a subscriber node: the messages come through DDS);
4. calls ``save_map`` and prints a summary (frames in and out, keyframes, rates, files).

The tiny model's geometry is meaningless (random weights): the demo shows the plumbing, not the
reconstruction. With ``--checkpoint PATH`` (or ``hf``) the real lingbot-map model runs instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from std_srvs.srv import Trigger

from gct_stream_ros.ros import topics
from gct_stream_ros.ros.map_state import MAP_FILE, TRAJECTORY_FILE
from gct_stream_ros.ros.messages import to_nanoseconds
from gct_stream_ros.ros.node import GctStreamNode
from gct_stream_ros.ros.topics import message_class
from gct_stream_ros.stream.synthetic import SyntheticScene
from gct_stream_ros.tools.camera_bag import write_camera_bag
from gct_stream_ros.tools.output_bag import OutputBag
from gct_stream_ros.tools.play import BagPlayer

PROGRAM = "gct_stream_demo"
IMAGE_TOPIC = "/camera/image_raw"
INFO_TOPIC = "/camera/camera_info"
START_NS = 1_700_000_000_000_000_000
"""The sample's first stamp: a plausible wall-clock time, so nothing mistakes it for 'unset'."""
MAP_PERIOD_S = 0.5
STEP_TIMEOUT_S = 30.0
"""Give up when the node has produced nothing new for this long after the bag ended."""


@dataclass
class DemoOptions:
    output: Path = Path("demo_output")
    frames: int = 48
    width: int = 112
    height: int = 84
    fps: float = 10.0
    rate: float = 1.0
    checkpoint: str = ""
    seed: int = 0


@dataclass
class DemoSummary:
    frames_in: int = 0
    frames_out: int = 0
    stamps_match: bool = False
    keyframes: int | None = None
    model_step_mean_ms: float | None = None
    seconds: float = 0.0
    output_fps: float = 0.0
    topic_counts: dict[str, int] = field(default_factory=dict)
    save_map_ok: bool = False
    save_map: str = ""
    files: list[str] = field(default_factory=list)
    tf_links: list[str] = field(default_factory=list)
    tf_stamps_match: bool | None = None
    """Whether /tf came with every input stamp; None where tf2_msgs is missing (then the node has no TF)."""

    @property
    def ok(self) -> bool:
        """Every frame came out with its own stamp, on /tf too where there is TF, and the map was saved."""
        return (self.frames_out == self.frames_in and self.stamps_match and self.tf_stamps_match is not False
                and self.save_map_ok)

    def text(self) -> str:
        keyframes = "?" if self.keyframes is None else str(self.keyframes)
        step = "?" if self.model_step_mean_ms is None else f"{self.model_step_mean_ms:.1f}"
        lines = [
            f"frames in {self.frames_in}, frames out {self.frames_out} "
            f"(output stamps {'=' if self.stamps_match else '!='} input stamps)",
            f"keyframes after the scale frames {keyframes}; model step mean {step} ms; "
            f"{self.output_fps:.1f} frames/s end to end over {self.seconds:.1f} s",
            "messages per topic: " + ", ".join(f"{t} {n}" for t, n in sorted(self.topic_counts.items())),
            self._tf_text(),
            f"save_map {'succeeded' if self.save_map_ok else 'FAILED'}: {self.save_map}",
            *(f"wrote {path}" for path in self.files),
        ]
        return "\n".join(lines)

    def _tf_text(self) -> str:
        if self.tf_stamps_match is None:
            return "TF: none (tf2_msgs is not importable; `make setup` builds it)"
        return (f"TF received over DDS: {', '.join(self.tf_links) or 'nothing'} "
                f"(stamps {'=' if self.tf_stamps_match else '!='} input stamps)")


def write_sample_bag(path: Path, options: DemoOptions) -> list[int]:
    """Render the synthetic walkthrough into a camera bag; return its image stamps."""
    scene = SyntheticScene(options.seed)
    frames = scene.render_sequence(options.frames, options.width, options.height, fps=options.fps)
    stamps = [START_NS + frame.stamp_ns for frame in frames]
    write_camera_bag(path, zip(stamps, (frame.image for frame in frames)), frames[0].intrinsics,
                     image_topic=IMAGE_TOPIC, info_topic=INFO_TOPIC)
    return stamps


class OutputRecorder:
    """Subscribes to the node's outputs: counts, stamps and arrival times per topic, raw copies in a bag."""

    def __init__(self, node: Node, bag: OutputBag) -> None:
        self.bag = bag
        self.stamps: dict[str, list[int]] = {}
        self.last_arrival = 0.0
        self.diagnostics: dict[str, str] = {}
        self.tf_links: set[str] = set()
        self._lock = threading.Lock()
        outputs = {topics.absolute(name): msgtype for name, msgtype in topics.OUTPUT_TYPES.items()}
        try:
            message_class(topics.TF_TYPE)
            outputs[topics.TF] = topics.TF_TYPE
        except ImportError:
            pass  # the node publishes no TF without tf2 either
        self.tf = topics.TF in outputs
        for topic, msgtype in outputs.items():
            # The map is latched: subscribe likewise to get it whenever it was last published.
            latched = topic == topics.absolute(topics.MAP)
            durability = DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=durability)
            node.create_subscription(message_class(msgtype), topic,
                                     lambda message, t=topic, m=msgtype: self._keep(t, m, message), qos)
        node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._keep_diagnostics, 10)

    def _keep(self, topic: str, msgtype: str, message: object) -> None:
        header = message.transforms[0].header if topic == topics.TF else message.header
        stamp_ns = to_nanoseconds(header.stamp)
        with self._lock:
            if topic == topics.TF:
                self.tf_links.update(f"{t.header.frame_id} -> {t.child_frame_id}" for t in message.transforms)
            self.stamps.setdefault(topic, []).append(stamp_ns)
            self.last_arrival = time.monotonic()
            self.bag.write(topic, msgtype, stamp_ns, serialize_message(message))

    def _keep_diagnostics(self, message: DiagnosticArray) -> None:
        for status in message.status:
            if status.name.endswith(": stream"):
                self.diagnostics = {entry.key: entry.value for entry in status.values}

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.stamps.get(topic, []))


def node_parameters(options: DemoOptions, output: Path) -> list[Parameter]:
    values = {
        "use_sim_time": True,
        "model.preset": "lingbot-map" if options.checkpoint else "tiny",
        "model.checkpoint": options.checkpoint,
        "model.image_width": options.width,
        "input.qos": "reliable",
        "queue.policy": "all",
        "output.map.period": MAP_PERIOD_S,
        "diagnostics.period": 0.2,
        "map.save_dir": str(output.resolve()),
    }
    return [Parameter(name, value=value) for name, value in values.items()]


def _wait_for_outputs(recorder: OutputRecorder, frames: int) -> None:
    """Until one odometry message per frame arrived, or nothing new came for ``STEP_TIMEOUT_S``."""
    odometry = topics.absolute(topics.ODOMETRY)
    since = time.monotonic()
    while recorder.count(odometry) < frames:
        if time.monotonic() - max(recorder.last_arrival, since) > STEP_TIMEOUT_S:
            return
        time.sleep(0.05)


def _call_save_map(node: Node) -> tuple[bool, str]:
    """``(success, message)`` of the node's ``save_map`` service (the executor spins elsewhere)."""
    client = node.create_client(Trigger, topics.SAVE_MAP_SERVICE)
    if not client.wait_for_service(timeout_sec=10.0):
        return False, "service not available"
    future = client.call_async(Trigger.Request())
    deadline = time.monotonic() + 30.0
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not future.done():
        return False, "no answer within 30 s"
    response = future.result()
    return response.success, response.message


def run_demo(options: DemoOptions, context: rclpy.Context | None = None) -> DemoSummary:
    """Run the demo in ``context`` (a fresh one when None, initialised and shut down here)."""
    output = options.output
    output.mkdir(parents=True, exist_ok=True)
    input_bag, output_bag = output / "input_bag", output / "output_bag"
    for stale in (input_bag, output_bag):
        shutil.rmtree(stale, ignore_errors=True)
    stamps = write_sample_bag(input_bag, options)

    own_context = context is None
    if own_context:
        context = rclpy.Context()
        rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=3, context=context)
    remaps = ["--ros-args", "-r", f"{topics.IMAGE}:={IMAGE_TOPIC}",
              "-r", f"{topics.CAMERA_INFO_INPUT}:={INFO_TOPIC}"]
    gct_node = GctStreamNode(context=context, parameter_overrides=node_parameters(options, output),
                             cli_args=remaps)
    helper = rclpy.create_node("gct_stream_demo", context=context)
    summary = DemoSummary(frames_in=len(stamps))
    try:
        with OutputBag(output_bag) as bag:
            recorder = OutputRecorder(helper, bag)
            player = BagPlayer(helper, input_bag, rate=options.rate)
            executor.add_node(gct_node)
            executor.add_node(helper)
            spinner = threading.Thread(target=executor.spin, daemon=True)
            spinner.start()
            if not player.wait_for_subscribers(10.0, count=len(player.topics)):
                raise RuntimeError(f"the node did not subscribe to {', '.join(player.topics)} within 10 s")
            start = time.monotonic()
            player.play()
            _wait_for_outputs(recorder, len(stamps))
            summary.seconds = max(recorder.last_arrival - start, 0.0)
            # The node's timers follow /clock: let them publish the final map and diagnostics.
            player.keep_clock_running(2 * MAP_PERIOD_S)
            summary.save_map_ok, summary.save_map = _call_save_map(helper)
            executor.shutdown()
            spinner.join(5.0)
        odometry = recorder.stamps.get(topics.absolute(topics.ODOMETRY), [])
        summary.frames_out = len(set(odometry))
        summary.stamps_match = sorted(set(odometry)) == stamps
        summary.topic_counts = {topic: len(s) for topic, s in recorder.stamps.items()}
        if recorder.tf:
            summary.tf_links = sorted(recorder.tf_links)
            summary.tf_stamps_match = sorted(set(recorder.stamps.get(topics.TF, []))) == stamps
        summary.output_fps = summary.frames_out / summary.seconds if summary.seconds > 0 else 0.0
        if "keyframes" in recorder.diagnostics:
            summary.keyframes = int(recorder.diagnostics["keyframes"])
            summary.model_step_mean_ms = float(recorder.diagnostics["model step mean [ms]"])
        summary.files = [str(path) for path in (input_bag, output_bag, output / MAP_FILE,
                                                output / TRAJECTORY_FILE) if path.exists()]
        (output / "summary.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
        summary.files.append(str(output / "summary.json"))
        return summary
    finally:
        executor.shutdown()
        gct_node.destroy_node()
        helper.destroy_node()
        if own_context:
            context.try_shutdown()


def parse_args(argv: Sequence[str] | None) -> DemoOptions:
    defaults = DemoOptions()
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=defaults.output, help="folder of the results")
    parser.add_argument("--frames", type=int, default=defaults.frames, help="length of the sample sequence")
    parser.add_argument("--width", type=int, default=defaults.width,
                        help="image and model width (multiple of 14)")
    parser.add_argument("--height", type=int, default=defaults.height, help="image height")
    parser.add_argument("--fps", type=float, default=defaults.fps, help="frame rate of the sample bag")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="playback speed factor")
    parser.add_argument("--checkpoint", default=defaults.checkpoint,
                        help="run the real model with these weights (a path or 'hf'); default: the tiny "
                             "random-weight model")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="synthetic scene seed")
    args = parser.parse_args(argv)
    return DemoOptions(**vars(args))


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    # Everything runs in this process: keep its discovery traffic on this machine.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    model = f"lingbot-map ({options.checkpoint})" if options.checkpoint else "tiny (random weights)"
    print(f"{PROGRAM}: {options.frames} synthetic frames {options.width}x{options.height} at {options.fps:g} "
          f"fps, model {model}")
    summary = run_demo(options)
    print(summary.text())
    ok = summary.ok
    print(f"{PROGRAM}: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
