"""``gct_stream_node``: camera images in; TF, depth, confidence, clouds, odometry, path and a fused map out.

The executor thread only decodes and enqueues images; a worker thread (``worker.py``) owns the
streaming session and publishes the results, each stamped with its input image's stamp. A
housekeeping timer publishes the fused map and ``/diagnostics`` at their own periods. See
``docs/node.md`` for the topics, services and parameters.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Protocol, TypeVar

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry, Path
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.publisher import Publisher
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger

from gct_stream_ros.mapping.fused_map import FusedMap
from gct_stream_ros.mapping.ply import write_ply
from gct_stream_ros.mapping.tum import write_tum
from gct_stream_ros.model.preprocess import PATCH_SIZE, model_size
from gct_stream_ros.ros import messages
from gct_stream_ros.ros.diagnostics import StreamDiagnostics, session_values
from gct_stream_ros.ros.image_decode import ImageDecodeError, decode_image
from gct_stream_ros.ros.parameters import NodeParameters
from gct_stream_ros.ros.qos import input_qos, map_qos, output_qos
from gct_stream_ros.ros.tf import MountLookup, TfBroadcaster, frame_transforms
from gct_stream_ros.ros.worker import FrameWorker
from gct_stream_ros.ros.world_frame import WorldFrame, tracked_pose, world_frame_id
from gct_stream_ros.settings import NODE_NAME, SettingsError, Value, engine_config
from gct_stream_ros.stream.config import EngineConfig
from gct_stream_ros.stream.result import FrameResult
from gct_stream_ros.stream.stats import SessionStats

RCLError = rclpy_implementation.RCLError
HOUSEKEEPING_PERIOD_S = 0.1
"""The map and diagnostics timers check their (changeable) periods this often."""
REJECTION_LOG_PERIOD_S = 5.0
MAX_ASPECT_RATIO = 16
"""Images resized taller than this many model widths are refused: the model only sees a centred square
of them, and a thin sliver (1 x 1000000) would cost gigabytes to resize."""
TRAJECTORY_LIMIT = 1_000_000
"""Poses kept for ``save_map`` (about 100 MB at the limit); the oldest go first."""
MAP_FILE = "map.ply"
TRAJECTORY_FILE = "trajectory.tum"


@dataclass
class CameraFrame:
    """An image waiting for the model."""

    image: np.ndarray
    stamp_ns: int
    frame_id: str


class Session(Protocol):
    """What the node needs of ``StreamSession`` (tests give it a stand-in)."""

    def push(self, image: np.ndarray, stamp_ns: int) -> list[FrameResult]: ...

    def reset(self) -> None: ...

    def stats(self) -> SessionStats: ...


SessionFactory = Callable[[EngineConfig], Session]
SessionT = TypeVar("SessionT")


def build_session(config: EngineConfig) -> Session:
    """The real engine; imported late so that tests with a stand-in never load the model code."""
    from gct_stream_ros.stream.session import StreamSession

    return StreamSession(config)


def open_session(factory: Callable[[EngineConfig], SessionT], values: Mapping[str, Value]) -> SessionT:
    """The session of ``values``; weights that cannot be loaded are a parameter error naming the file."""
    try:
        return factory(engine_config(values))
    except Exception as error:
        # Imported here, like the session: a node with a stand-in session never loads the model code.
        from gct_stream_ros.model.checkpoint import CheckpointError

        if isinstance(error, CheckpointError):
            raise SettingsError(f"model.checkpoint={values['model.checkpoint']!r}: {error}") from None
        raise


class GctStreamNode(Node):
    """The streaming reconstruction node; ``session_factory`` lets tests run it without the model."""

    def __init__(self, node_name: str = NODE_NAME, session_factory: SessionFactory = build_session,
                 **node_options: object) -> None:
        super().__init__(node_name, **node_options)
        try:
            self._settings = NodeParameters(self, self._on_parameters_changed)
            self._session = open_session(session_factory, self.values)
        except BaseException:
            # Untrack the half-built node: the context's shutdown would otherwise destroy it (no worker yet).
            super().destroy_node()
            raise
        values = self.values
        self._map_lock = threading.Lock()
        self._map = FusedMap(values["output.map.voxel_size"], values["output.map.max_points"])
        self._map_dirty = False
        self._map_stamp_ns = 0
        self._trajectory: deque[tuple[int, np.ndarray]] = deque(maxlen=TRAJECTORY_LIMIT)
        self._path: deque = deque(maxlen=values["output.path.max_length"])
        self._world: WorldFrame | None = None
        self._sequence: int | None = None
        self._last_stamp_ns: int | None = None
        self._reset_requested = threading.Event()
        self._camera_info: CameraInfo | None = None
        self._last_map_publish = time.monotonic()
        self._last_diagnostics = time.monotonic()

        self._create_outputs()
        image_topic = self._create_inputs()
        self._tf = TfBroadcaster(self)
        self._mount = MountLookup(self)
        self.diagnostics = StreamDiagnostics(f"{self.get_name()}: stream", [image_topic])
        self.worker: FrameWorker[CameraFrame] = FrameWorker(
            self._process, self._recover, values["queue.policy"], values["queue.size"])
        self.create_service(Trigger, "reset", self._on_reset)
        self.create_service(Trigger, "save_map", self._on_save_map)
        self.create_timer(HOUSEKEEPING_PERIOD_S, self._housekeeping)
        self._log_summary(image_topic)

    @property
    def values(self) -> dict[str, Value]:
        """The current parameter values (by dotted name)."""
        return self._settings.values

    # -- set-up -------------------------------------------------------------------------------------------

    def _create_outputs(self) -> None:
        qos = output_qos(self.values["output.qos"])
        self._depth_pub = self.create_publisher(Image, "depth/image", qos)
        self._depth_info_pub = self.create_publisher(CameraInfo, "depth/camera_info", qos)
        self._confidence_pub = self.create_publisher(Image, "depth/confidence", qos)
        self._points_pub = self.create_publisher(PointCloud2, "points", qos)
        self._odometry_pub = self.create_publisher(Odometry, "odometry", qos)
        self._path_pub = self.create_publisher(Path, "path", qos)
        self._map_pub = self.create_publisher(PointCloud2, "map/points", map_qos())
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    def _create_inputs(self) -> str:
        qos = input_qos(self.values["input.qos"], every_frame=self.values["queue.policy"] == "all")
        if self.values["input.transport"] == "compressed":
            subscription = self.create_subscription(CompressedImage, "image/compressed", self._on_image, qos)
        else:
            subscription = self.create_subscription(Image, "image", self._on_image, qos)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos)
        return subscription.topic_name

    def _log_summary(self, image_topic: str) -> None:
        v = self.values
        stats = self._session.stats()
        self.get_logger().info(
            f"model {v['model.preset']} ({v['model.checkpoint'] or 'random weights'}) on {stats.device} "
            f"{stats.dtype}, input width {v['model.image_width']}, {v['model.num_scale_frames']} scale "
            f"frames, keyframes {v['keyframes.mode']}, window {v['window.mode']}, cache {v['cache.policy']}; "
            f"listening on {image_topic} (queue {v['queue.policy']}/{v['queue.size']}); "
            f"TF via {self._tf.backend}")

    # -- executor thread: inputs and services -------------------------------------------------------------

    def _on_camera_info(self, message: CameraInfo) -> None:
        self._camera_info = message

    def _on_image(self, message: Image | CompressedImage) -> None:
        self.diagnostics.image_received()
        try:
            image = decode_image(message)
            self._check_size(image)
        except ImageDecodeError as error:
            self._reject(str(error))
            return
        frame_id = self.values["frames.camera"] or message.header.frame_id or (
            self._camera_info.header.frame_id if self._camera_info else "")
        if not frame_id:
            self._reject("no camera frame: the image header has no frame_id and frames.camera is empty")
            return
        stamp_ns = messages.to_nanoseconds(message.header.stamp)
        self.diagnostics.dropped += self.worker.submit(CameraFrame(image, stamp_ns, frame_id))
        if self.worker.behind:
            self.get_logger().warning(f"{self.worker.backlog} frames waiting: the model is falling behind "
                                      f"the input", throttle_duration_sec=REJECTION_LOG_PERIOD_S)

    def _check_size(self, image: np.ndarray) -> None:
        """Refuse sizes the model cannot take and sizes that disagree with ``camera_info``."""
        height, width = image.shape[:2]
        resized_h, model_w = model_size((height, width), self.values["model.image_width"]).resized_hw
        if not PATCH_SIZE <= resized_h <= MAX_ASPECT_RATIO * model_w:
            raise ImageDecodeError(f"a {width}x{height} image would be resized to {model_w}x{resized_h} for "
                                   f"the model (heights {PATCH_SIZE} to {MAX_ASPECT_RATIO * model_w} work)")
        info = self._camera_info
        if info is not None and info.width and info.height and (info.height, info.width) != image.shape[:2]:
            raise ImageDecodeError(f"image is {image.shape[1]}x{image.shape[0]} but camera_info says "
                                   f"{info.width}x{info.height}")

    def _reject(self, reason: str) -> None:
        self.diagnostics.rejected += 1
        self.get_logger().warning(f"rejected image message: {reason}",
                                  throttle_duration_sec=REJECTION_LOG_PERIOD_S)

    def _on_parameters_changed(self, values: dict[str, Value]) -> None:
        with self._map_lock:
            if (values["output.map.voxel_size"], values["output.map.max_points"]) != (
                    self._map.voxel_size, self._map.max_points):
                self._map = FusedMap(values["output.map.voxel_size"], values["output.map.max_points"])
                self._map_dirty = True
                self.get_logger().info("fused map settings changed: the map restarts empty")
            if self._path.maxlen != values["output.path.max_length"]:
                self._path = deque(self._path, maxlen=values["output.path.max_length"])

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        dropped = self.worker.clear()
        self._reset_requested.set()
        self._clear_map()
        self.get_logger().info(f"reset: session, map and path cleared ({dropped} queued frames dropped)")
        response.success, response.message = True, "session, map and path cleared"
        return response

    def _on_save_map(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        folder = FilePath(os.path.expanduser(self.values["map.save_dir"] or "."))
        with self._map_lock:
            xyz, rgb = self._map.points()
            trajectory = list(self._trajectory)
        try:
            map_path = write_ply(folder / MAP_FILE, xyz, rgb)
            trajectory_path = write_tum(folder / TRAJECTORY_FILE, [s for s, _ in trajectory],
                                        [p for _, p in trajectory])
        except OSError as error:
            response.success, response.message = False, f"cannot write to {folder}: {error}"
            self.get_logger().error(response.message)
            return response
        response.success = True
        response.message = (f"{map_path.resolve()} ({len(xyz)} points); {trajectory_path.resolve()} "
                            f"({len(trajectory)} poses)")
        self.get_logger().info(f"map saved: {response.message}")
        return response

    def _housekeeping(self) -> None:
        now = time.monotonic()
        period = self.values["output.map.period"]
        if period > 0 and now - self._last_map_publish >= period:
            self._last_map_publish = now
            self._publish_map()
        period = self.values["diagnostics.period"]
        if period > 0 and now - self._last_diagnostics >= period:
            self._last_diagnostics = now
            self._publish_diagnostics()

    def _publish_map(self) -> None:
        with self._map_lock:
            if not self._map_dirty:
                return
            self._map_dirty = False
            xyz, rgb = self._map.points()
            stamp_ns = self._map_stamp_ns
        self._map_pub.publish(messages.point_cloud(xyz, rgb, stamp_ns, world_frame_id(self.values)))

    def _publish_diagnostics(self) -> None:
        extra = session_values(self._session.stats())
        extra["queued frames"] = str(self.worker.backlog)
        extra["map points"] = str(len(self._map))
        report = self.diagnostics.report(self.get_clock().now().to_msg(),
                                         self.values["diagnostics.no_data_timeout"], extra,
                                         hardware_id=extra["device"])
        if report.status[0].level != DiagnosticStatus.OK:
            self.get_logger().warning(report.status[0].message, throttle_duration_sec=REJECTION_LOG_PERIOD_S)
        self._diagnostics_pub.publish(report)

    # -- worker thread: the model and the per-frame outputs ----------------------------------------------

    def _process(self, frame: CameraFrame) -> None:
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            self._reset_session()
        if self._last_stamp_ns is not None and frame.stamp_ns < self._last_stamp_ns:
            self.get_logger().warning(f"stamp went backwards ({self._last_stamp_ns} -> {frame.stamp_ns} ns; "
                                      f"bag restarted?): session and map reset")
            self._reset_session()
        self._last_stamp_ns = frame.stamp_ns
        for result in self._session.push(frame.image, frame.stamp_ns):
            self._publish_result(result, frame.frame_id)

    def _recover(self, error: Exception) -> None:
        """A step failed (e.g. out of GPU memory): log it, start a new sequence, keep going."""
        if not self.context.ok():
            return  # a signal shut ROS down under the running step: publishing failed, nothing is wrong
        self.diagnostics.errors += 1
        self.get_logger().error(f"step failed, session reset: {error!r}\n{traceback.format_exc(limit=5)}")
        self._reset_session()

    def _reset_session(self) -> None:
        self._session.reset()
        self._restart_map()
        self._last_stamp_ns = None

    def _restart_map(self) -> None:
        """Worker side of a new world frame: the map, the path and the frame itself start again."""
        self._clear_map()
        self._path.clear()
        self._world = None
        self._sequence = None

    def _clear_map(self) -> None:
        with self._map_lock:
            self._map.clear()
            self._trajectory.clear()
            self._map_dirty = True

    def _world_for(self, result: FrameResult, camera_frame: str) -> WorldFrame:
        """The world frame of the result's sequence; a new sequence (input size change) starts a new map."""
        if self._world is not None and result.sequence == self._sequence:
            return self._world
        if self._sequence is not None:
            self.get_logger().warning(f"new sequence {result.sequence} (input size changed): map and path "
                                      f"restart")
            self._restart_map()
        mount = None
        if self.values["tf.publish_odom_to_base"]:
            mount = self._mount.lookup(self.values["frames.base"], camera_frame)
            if mount is None:
                self.get_logger().warning(f"no TF {self.values['frames.base']} -> {camera_frame}: assuming "
                                          f"the camera sits at the base, looking forward")
        self._world, self._sequence = WorldFrame(mount), result.sequence
        return self._world

    def _publish_result(self, result: FrameResult, camera_frame: str) -> None:
        if result.revision and self.values["output.revisions"] == "ignore":
            return
        v = self.values
        world = self._world_for(result, camera_frame)
        stamp = result.stamp_ns
        child_frame, pose = tracked_pose(v, world, result.pose_c2w, camera_frame)
        if not result.revision:
            # Fused before anything goes out: whoever saw the frame finds it in the map and trajectory.
            self._fuse(result, world, pose)
            self._path.append(messages.pose_stamped(pose, stamp, world_frame_id(v)))
            self.diagnostics.processed += 1
            self._tf.send(frame_transforms(v, camera_frame, world, result.pose_c2w, stamp))
        if _wanted(self._depth_pub):
            self._depth_pub.publish(messages.depth_image(result, camera_frame, v["output.depth.encoding"]))
        if _wanted(self._depth_info_pub):
            self._depth_info_pub.publish(messages.camera_info(result, camera_frame))
        if _wanted(self._confidence_pub):
            self._confidence_pub.publish(messages.confidence_image(result, camera_frame))
        if _wanted(self._points_pub):
            in_map = v["output.points.frame"] == "map"
            transform = world.from_session if in_map else np.linalg.inv(result.pose_c2w)
            xyz, rgb = messages.cloud_points(result, transform, v["output.points.decimation"],
                                             v["output.points.min_confidence"])
            self._points_pub.publish(messages.point_cloud(xyz, rgb, stamp, world_frame_id(v) if in_map
                                                          else camera_frame))
        if _wanted(self._odometry_pub):
            self._odometry_pub.publish(messages.odometry(pose, stamp, world_frame_id(v), child_frame))
        if not result.revision and _wanted(self._path_pub):
            self._path_pub.publish(messages.path(list(self._path), stamp, world_frame_id(v)))

    def _fuse(self, result: FrameResult, world: WorldFrame, pose: np.ndarray) -> None:
        v = self.values
        points = None
        if result.keyframe:
            points = messages.cloud_points(result, world.from_session, v["output.points.decimation"],
                                           v["output.points.min_confidence"])
        with self._map_lock:
            self._trajectory.append((result.stamp_ns, pose))
            if points is not None:
                self._map.add(*points)
                self._map_dirty = True
                self._map_stamp_ns = result.stamp_ns

    def destroy_node(self) -> None:
        if not self.worker.stop(timeout_s=2.0):
            self.get_logger().warning("the worker is still inside a model step; leaving it behind")
        super().destroy_node()


def _wanted(publisher: Publisher) -> bool:
    """Lazy outputs: nothing is computed for a topic nobody listens to."""
    return publisher.get_subscription_count() > 0


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    # Made before the node: a signal during the (possibly long) model load must not find it missing.
    executor = SingleThreadedExecutor()
    node = None
    try:
        node = GctStreamNode()
        executor.add_node(node)
        executor.spin()
    except SettingsError as error:
        print(f"gct_stream_node: invalid parameters: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        if rclpy.ok():
            raise
        # A signal shut the context down between the executor's check and its wait: a normal stop.
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
