"""gct_stream_offline: map a rosbag, an image folder or a video offline, every frame in order.

    gct_stream_offline INPUT -o OUTPUT_DIR [--topic T] [--fps F] [--start-time S] [--params-file YAML]
                       [--stats FILE.jsonl] [--overwrite] [--odometry-topic T] [--depth-topic T]
                       [-p name:=value ...]

Writes into OUTPUT_DIR:
- ``bag/``: an MCAP rosbag2 (``ros2 bag play OUTPUT_DIR/bag``) with what the node publishes,
  stamped with the input stamps: ``/tf`` (map -> camera optical frame by default), depth,
  confidence, camera_info, the decimated per-frame cloud, odometry and path, and the fused map
  once at the end; each topic records the QoS the node offers (the map transient local);
- ``map.ply``: the fused map of the keyframes' points; ``trajectory.tum``: every frame's pose
  (the one odometry follows) in the world frame, as the node's ``save_map`` writes them.

The summary gives frames/s and the time of each stage (decode, preprocess, step, result, messages,
bag write; docs/tools.md, *Time per stage*); decoding and preprocessing run on a reader thread, the
results' assembly on a results thread, messages and the bag on a writer thread, beside the network
step, so that the main thread starts the next step as soon as one ends. Parameters are the node's (same
names, same YAML). Window-overlap revisions are applied: each frame is written once, with its latest
estimate, as soon as no later window can revise it.
Input frames that cannot be decoded are skipped and counted (a warning each), as the node does.
Images of a folder or a video are stamped from ``--start-time`` (seconds since the epoch;
default: the wall clock at the start). An existing output is kept unless ``--overwrite``.

With a metric ``scale.source`` the same sources as the node's come from the bag
(``--odometry-topic``: ``nav_msgs/Odometry``; ``--depth-topic``: aligned metric depth) and
final estimates are held until their sequence has its first estimate, so the outputs are
metric from the first frame (see docs/node.md, *Metric scale*).
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TextIO

from rclpy.qos import QoSProfile
from rclpy.serialization import serialize_message
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from tqdm import tqdm

from gct_stream_ros.cache.base import CacheStats
from gct_stream_ros.model.network import StreamingNetwork
from gct_stream_ros.ros import topics
from gct_stream_ros.ros.frame_messages import frame_messages, load_message_type_support, map_message
from gct_stream_ros.ros.map_state import MapState
from gct_stream_ros.ros.odom_frame import OdomFrame
from gct_stream_ros.ros.options import NodeOptions
from gct_stream_ros.ros.qos import map_qos, output_qos
from gct_stream_ros.ros.session import open_session
from gct_stream_ros.ros.tf import TF_QOS
from gct_stream_ros.ros.type_support import TypeSupportError
from gct_stream_ros.ros.world_frame import WorldFrame
from gct_stream_ros.settings import (
    SettingsError,
    Value,
    load_params_file,
    parse_assignments,
    resolve,
)
from gct_stream_ros.stamps import NS_PER_S, split_stamp
from gct_stream_ros.stream.config import ConfigError
from gct_stream_ros.stream.frame_assembly import DeferredResult, assemble_all
from gct_stream_ros.stream.ordered_worker import OrderedWorker
from gct_stream_ros.stream.result import FrameResult
from gct_stream_ros.stream.scale.apply import scale_result
from gct_stream_ros.stream.scale.tracker import MetricScale
from gct_stream_ros.stream.session import StreamSession
from gct_stream_ros.stream.stats import StepTimes
from gct_stream_ros.tools.bag_sensors import BagScaleInputs
from gct_stream_ros.tools.final_estimates import FinalEstimates
from gct_stream_ros.tools.frame_reader import FrameReader, ReadFrame
from gct_stream_ros.tools.frame_source import FrameSource, InputError, is_bag, open_frames
from gct_stream_ros.tools.output_bag import OutputBag, tf_message_cdr
from gct_stream_ros.tools.stage_times import (
    BAG_WRITE,
    DECODE,
    INPUT_WAIT,
    MESSAGES,
    OUTPUT_WAIT,
    PREPROCESS,
    RESULT,
    STEP,
    StageTimes,
)
from gct_stream_ros.tools.stats_file import append_record, stats_record

PROGRAM = "gct_stream_offline"
DEFAULT_CAMERA_FRAME = "camera_optical_frame"
"""Frame of the outputs when neither ``frames.camera`` nor the input names one (folders, videos)."""
HELD_FRAMES_LIMIT = 100
"""Final estimates held while the scale source has no estimate yet (a few MB each at 518 px); beyond
it the oldest are written in model units, and the map and trajectory restart at the first estimate."""


def ros_type_name(message: object) -> str:
    """``pkg/msg/Name`` of an rclpy message object."""
    return f"{type(message).__module__.split('.')[0]}/msg/{type(message).__name__}"


def recorded_qos(profile: QoSProfile) -> Qos:
    """An rclpy profile as rosbag2 metadata records it (the policy enums share rmw's values)."""

    def duration(value: object) -> QosTime:
        return QosTime(*split_stamp(value.nanoseconds))

    return Qos(history=QosHistory(profile.history.value), depth=profile.depth,
               reliability=QosReliability(profile.reliability.value),
               durability=QosDurability(profile.durability.value), deadline=duration(profile.deadline),
               lifespan=duration(profile.lifespan), liveliness=QosLiveliness(profile.liveliness.value),
               liveliness_lease_duration=duration(profile.liveliness_lease_duration),
               avoid_ros_namespace_conventions=profile.avoid_ros_namespace_conventions)


def topic_qos(options: NodeOptions) -> dict[str, Qos]:
    """The QoS the node offers on each of its output topics (``topics``' names)."""
    qos = dict.fromkeys(topics.FRAME_OUTPUTS, recorded_qos(output_qos(options.output.qos)))
    qos.update({topics.TF: recorded_qos(TF_QOS), topics.MAP: recorded_qos(map_qos())})
    return qos


class BagResultWriter:
    """Writes final estimates into the bag as the node publishes them (``frame_messages``, same map state)."""

    def __init__(self, bag: OutputBag, options: NodeOptions, map_state: MapState, times: StageTimes) -> None:
        self.bag = bag
        self.options = options
        self.map_state = map_state
        self.times = times
        """Where the time of ``messages`` and ``bag write`` goes."""
        load_message_type_support()  # before the writer thread serializes anything
        # No TF to look the camera mount up from: the camera is tracked itself, as the node does then.
        self.world = WorldFrame()
        self.odom = OdomFrame()
        self._qos = topic_qos(options)

    def write(self, result: FrameResult, camera_frame: str) -> None:
        """Write one final estimate's messages and add it to the map state."""
        start = time.perf_counter()
        frame = frame_messages(result, camera_frame, self.world, self.odom, self.options, self.map_state)
        built = time.perf_counter()
        self.times.add(MESSAGES, (built - start) * 1e3)
        if frame.transforms:
            tf = tf_message_cdr([serialize_message(t) for t in frame.transforms])
            self.bag.write(topics.TF, topics.TF_TYPE, result.stamp_ns, tf, self._qos[topics.TF])
        for topic, message in frame.outputs:
            self._write(topic, message, result.stamp_ns)
        self.times.add(BAG_WRITE, (time.perf_counter() - built) * 1e3)

    def write_map(self) -> None:
        """The fused map once, stamped with the latest frame."""
        stamp_ns = max(stamp for stamp, _ in self.map_state.trajectory())
        self._write(*map_message(*self.map_state.points(), stamp_ns, self.options), stamp_ns)

    def _write(self, topic: str, message: object, stamp_ns: int) -> None:
        self.bag.write(topics.absolute(topic), ros_type_name(message), stamp_ns, serialize_message(message),
                       self._qos[topic])


class BackgroundResultWriter:
    """``BagResultWriter``'s writes on a worker thread, in order, while the main thread steps the network;
    a map restart is queued between the writes it separates."""

    def __init__(self, writer: BagResultWriter, worker: OrderedWorker) -> None:
        self._writer = writer
        self._worker = worker

    def write(self, result: FrameResult, camera_frame: str) -> None:
        self._worker.submit(self._writer.write, result, camera_frame)

    def restart_map(self) -> None:
        self._worker.submit(self._writer.map_state.restart)


@dataclass(frozen=True)
class PushedFrame:
    """What the results thread needs of an input frame besides its estimate."""

    index: int
    camera_frame: str
    input_hw: tuple[int, int]


@dataclass
class OfflineSummary:
    frames: int = 0
    skipped: int = 0
    """Input frames that could not be decoded."""
    keyframes: int = 0
    revisions: int = 0
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)
    topic_counts: dict[str, int] = field(default_factory=dict)
    scale: str = ""
    """The metric scale at the end (``ScaleState.describe``)."""
    unscaled_frames: int = 0
    """Frames written in model units although a metric source was set (no estimate in time)."""
    times: StageTimes = field(default_factory=StageTimes)
    """Time per stage (decode, preprocess, step, result, messages, bag write)."""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        lines = [f"{self.frames} frames ({self.keyframes} keyframes, {self.revisions} revisions applied) in "
                 f"{self.seconds:.1f} s: {self.fps:.2f} frames/s"]
        if self.skipped:
            lines.append(f"  {self.skipped} input frames skipped (could not be decoded)")
        unscaled = (f"; {self.unscaled_frames} frames written in model units before the first estimate"
                    if self.unscaled_frames else "")
        lines.append(f"  scale: {self.scale}{unscaled}")
        if self.frames:
            lines.append(self.times.text(self.frames))
        lines += [f"  {topic}: {count} messages" for topic, count in sorted(self.topic_counts.items())]
        lines += [f"  wrote {path}" for path in self.files]
        return "\n".join(lines)


class OfflineMapper:
    """Feeds frames to a session and turns final estimates into the bag, the map and the trajectory."""

    def __init__(self, values: Mapping[str, Value], output_dir: Path, network: StreamingNetwork | None = None,
                 stats_path: Path | None = None, overwrite: bool = False,
                 scale_inputs: BagScaleInputs | None = None) -> None:
        self.options = NodeOptions.from_values(values)
        self.scale = MetricScale(self.options.scale)
        if self.scale.needs and scale_inputs is None:
            raise InputError(f"scale.source {self.options.scale.source} needs the bag's "
                             f"{'odometry' if self.scale.needs == 'odometry' else 'depth'} topic")
        self._scale_inputs = scale_inputs
        self.output_dir = output_dir
        self.bag_path = output_dir / "bag"
        if self.bag_path.exists() and not overwrite:
            raise InputError(f"{self.bag_path} already exists: choose another output directory, remove it "
                             "or pass --overwrite")
        self._overwrite = overwrite
        self.session = open_session(functools.partial(StreamSession, network=network), self.options.engine)
        # During a run only the main thread drives the session; the final estimates, the scale, the held
        # results and what each frame's results need (camera frame, input size) are the results thread's.
        self.estimates = FinalEstimates(windowed=self.session.config.window_mode != "off")
        output = self.options.output
        # Every pose is kept: the trajectory file of a long recording holds all of them.
        self.map_state = MapState(output.map_voxel_size, output.map_max_points, output.path_max_length,
                                  trajectory_limit=None)
        self._camera_frames: dict[int, str] = {}
        self._input_hw: dict[int, tuple[int, int]] = {}
        self._held: list[FrameResult] = []
        self._unscaled_sequence: int | None = None
        """The sequence some of whose frames went out in model units."""
        self._stats_path = stats_path
        self._steps_seen = StepTimes()
        """The session's step timings already in the summary."""
        self.summary = OfflineSummary()

    def run(self, source: FrameSource, progress: bool = True) -> OfflineSummary:
        start = time.perf_counter()
        self._prepare_output()
        with ExitStack() as open_files:
            stats = open_files.enter_context(self._stats_path.open("w")) if self._stats_path else None
            with OutputBag(self.bag_path) as bag, FrameReader(source, self.session.prepare) as reader:
                bag_writer = BagResultWriter(bag, self.options, self.map_state, self.summary.times)
                # closed in reverse: the results thread hands its last results to the writer, then stops
                with (OrderedWorker(name=f"{PROGRAM} writer") as writer_thread,
                      OrderedWorker(name=f"{PROGRAM} results") as results_thread):
                    frames = tqdm(reader, total=len(source), unit="frame", desc=PROGRAM, disable=not progress,
                                  dynamic_ncols=True)
                    writer = BackgroundResultWriter(bag_writer, writer_thread)
                    self._feed(frames, source, results_thread, writer, stats)
                bag_writer.write_map()
                self.summary.topic_counts = dict(bag.counts)
        self._write_map_and_trajectory()
        self.summary.revisions = self.estimates.revisions_applied
        self.summary.scale = self.scale.state.describe()
        self.summary.seconds = time.perf_counter() - start
        return self.summary

    def _feed(self, frames: Iterable[ReadFrame], source: FrameSource, results_thread: OrderedWorker,
              writer: BackgroundResultWriter, stats: TextIO | None) -> None:
        """Every input frame through the session, in order; each push's results go to the results thread,
        which assembles them and writes them as they become final (``_take``), while this thread steps the
        next frame; then what the end of the input makes final."""
        times = self.summary.times
        waiting = time.perf_counter()
        for read in frames:
            pushed = time.perf_counter()
            times.add(INPUT_WAIT, (pushed - waiting) * 1e3)
            times.add(DECODE, read.decode_ms)
            times.add(PREPROCESS, read.prepared.preprocess_ms)
            self._report_skipped(source, frames)
            frame = read.frame
            camera_frame = self.options.frames.camera_override or frame.frame_id or DEFAULT_CAMERA_FRAME
            pushed_frame = PushedFrame(self.summary.frames, camera_frame, frame.image.shape[:2])
            self.summary.frames += 1
            deferred = self.session.push_prepared_deferred(read.prepared, frame.stamp_ns)
            step_ms = self._step_ms()
            times.add(OUTPUT_WAIT, results_thread.submit(self._take, pushed_frame, deferred,
                                                         self._cache_stats(deferred, stats), writer, stats))
            waiting = time.perf_counter()
            if step_ms is not None:  # a frame that waits for the scale phase costs nothing yet
                times.add_period((waiting - pushed) * 1e3, step_ms)
        self._report_skipped(source, frames)
        if not self.summary.frames:
            skipped = f" that could be decoded ({len(source.skipped)} skipped)" if source.skipped else ""
            raise InputError(f"{source.description}: no frames{skipped}")
        deferred = self.session.flush_deferred()
        self._step_ms()
        results_thread.submit(self._take, None, deferred, self._cache_stats(deferred, stats), writer, stats)
        results_thread.submit(self._finish, writer)

    def _prepare_output(self) -> None:
        """Create the output folders (an old bag goes with ``overwrite``); ``InputError`` when impossible."""
        folders = [self.output_dir] + ([self._stats_path.parent] if self._stats_path else [])
        try:
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
            if self._overwrite and self.bag_path.exists():
                shutil.rmtree(self.bag_path)
            probe = self.output_dir / ".gct_stream_offline_probe"
            probe.touch()
            probe.unlink()
        except OSError as error:
            raise InputError(f"cannot write to {error.filename or self.output_dir}: "
                             f"{error.strerror or error}") from None

    def _report_skipped(self, source: FrameSource, progress: tqdm) -> None:
        """One warning per newly skipped input frame; they all count in the summary."""
        for reason in source.skipped[self.summary.skipped:]:
            progress.write(f"{PROGRAM}: warning: skipped an input frame: {reason}", file=sys.stderr)
        self.summary.skipped = len(source.skipped)

    def _step_ms(self) -> float | None:
        """The time of the network steps of the last push (its ``STEP`` sample); None when it ran none."""
        steps = self.session.step_times
        if steps.count == self._steps_seen.count:
            return None
        step_ms = steps.total_ms - self._steps_seen.total_ms
        self.summary.times.add(STEP, step_ms)  # one sample per push that ran the network
        self._steps_seen = steps
        return step_ms

    def _cache_stats(self, deferred: list[DeferredResult], stats: TextIO | None) -> CacheStats | None:
        """The cache after the last push, for the stats file (read on the main thread, which alone drives
        the network)."""
        return self.session.network.cache_stats() if stats and deferred else None

    def _take(self, pushed: PushedFrame | None, deferred: list[DeferredResult], cache: CacheStats | None,
              writer: BackgroundResultWriter, stats: TextIO | None) -> None:
        """Results thread: assemble a push's results, feed the stats file and the scale source, write what
        became final. ``pushed`` is the frame that push added (None for the final flush)."""
        if pushed is not None:
            self._camera_frames[pushed.index] = pushed.camera_frame
            self._input_hw[pushed.index] = pushed.input_hw
        results = assemble_all(deferred)
        for result in results:
            self.summary.times.add(RESULT, result.timings_ms[RESULT])
            if not result.revision:
                self.summary.keyframes += result.keyframe
                if stats:
                    append_record(stats, stats_record(result, cache, result.timings_ms.get("step", 0.0)))
            self._measure_scale(result)
        self._finalize(self.estimates.add(results), writer)

    def _finish(self, writer: BackgroundResultWriter) -> None:
        """Results thread, after the last ``_take``: what the end of the input makes final."""
        self._finalize(self.estimates.finish(), writer, end=True)

    def _measure_scale(self, result: FrameResult) -> None:
        """Feed the scale source in the engine's order (revisions add no samples)."""
        reference = None
        if not result.revision:
            input_hw = self._input_hw.pop(result.index)
            if self._scale_inputs is not None:
                reference = self._scale_inputs.reference(result.stamp_ns, input_hw)
        self.scale.update(result, reference)

    def _finalize(self, results: list[FrameResult], writer: BackgroundResultWriter,
                  end: bool = False) -> None:
        """Write final estimates in order, scaled by their sequence's scale; while the current sequence has no
        estimate yet they wait (up to ``HELD_FRAMES_LIMIT``, or the end of the input)."""
        self._held += results
        while self._held:
            result = self._held[0]
            state = self.scale.state_of(result.sequence)
            still_measuring = self.scale.measuring and result.sequence == self.scale.sequence
            if not state.metric and still_measuring and not end and len(self._held) <= HELD_FRAMES_LIMIT:
                return
            del self._held[0]
            if state.metric:
                if self._unscaled_sequence == result.sequence:
                    writer.restart_map()  # no map or trajectory mixing model units and metres
                    self._unscaled_sequence = None
                result = scale_result(result, state.scale)
            elif self.scale.measuring:
                self.summary.unscaled_frames += 1
                self._unscaled_sequence = result.sequence
            writer.write(result, self._camera_frames.pop(result.index))

    def _write_map_and_trajectory(self) -> None:
        saved = self.map_state.save(self.output_dir)
        self.summary.files = [self.bag_path, saved.map_path, saved.trajectory_path]
        if self._stats_path:
            self.summary.files.append(self._stats_path)


def load_parameters(params_file: Path | None, assignments: Sequence[str]) -> dict[str, Value]:
    """Defaults, then the YAML file, then ``name:=value`` assignments; checked together."""
    values: dict[str, Value] = dict(load_params_file(params_file)) if params_file else {}
    values.update(parse_assignments(assignments))
    return resolve(values)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path,
                        help="rosbag2 directory (sqlite3/MCAP), ROS 1 .bag, image folder or video file")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    parser.add_argument("--topic", help="image topic of a bag (default: its only image topic)")
    parser.add_argument("--fps", type=float, default=10.0, help="stamps of an image folder (default 10)")
    parser.add_argument("--start-time", type=_positive_seconds, metavar="SECONDS",
                        help="stamp of the first image of a folder or video, in seconds since the epoch "
                             "(default: the wall clock at the start)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the bag of an earlier run in the output directory")
    parser.add_argument("--params-file", type=Path, help="node parameters YAML (ROS params layout)")
    parser.add_argument("--stats", type=Path, help="write one JSON line per frame to this file")
    parser.add_argument("--odometry-topic", help="scale.source odometry: the bag's nav_msgs/Odometry topic")
    parser.add_argument("--depth-topic", help="scale.source depth: the bag's aligned metric depth topic")
    parser.add_argument("-p", "--param", dest="params", action="append", default=[], metavar="NAME:=VALUE",
                        help="set a node parameter (repeatable), e.g. -p model.preset:=tiny")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _positive_seconds(text: str) -> int:
    """``--start-time`` in nanoseconds; zero or less would mean "latest" to tf2."""
    try:
        seconds = Decimal(text)  # exact: a float loses the nanoseconds of an epoch time
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be positive (a zero stamp means 'latest' to tf2), got {text}")
    return int(seconds * NS_PER_S)


def scale_inputs(args: argparse.Namespace, options: NodeOptions) -> BagScaleInputs | None:
    """The bag's odometry or depth for a measuring scale source; None when the source needs neither."""
    if options.scale.source not in ("odometry", "depth"):
        return None
    if not is_bag(args.input):
        raise InputError(f"scale.source {options.scale.source} reads its data from a bag; {args.input} is "
                         f"not one")
    return BagScaleInputs(args.input, options.scale, args.odometry_topic, args.depth_topic)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        values = load_parameters(args.params_file, args.params)
        source = open_frames(args.input, args.topic, args.fps, args.start_time)
        mapper = OfflineMapper(values, args.output, stats_path=args.stats, overwrite=args.overwrite,
                               scale_inputs=scale_inputs(args, NodeOptions.from_values(values)))
        summary = mapper.run(source, progress=not args.quiet)
    except (InputError, SettingsError, ConfigError, TypeSupportError) as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a disk that fills up or a folder removed under the run
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted; the bag holds the frames written so far", file=sys.stderr)
        return 130
    print(summary.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
