"""``gct_stream_node``: camera images in; TF, depth, confidence, clouds, odometry, path and a fused map out.

The executor thread only decodes, preprocesses and enqueues images; a worker thread (``worker.py``)
runs ``frame_processor.py``, which owns the streaming session and ends sequences (the flush); its
publisher thread publishes the results in order, each stamped with its input image's stamp, in
metres once ``result_scaler.py`` has an estimate. ``status`` and ``/diagnostics`` come from
``status_reports.py``; a housekeeping timer publishes the fused map and ``/diagnostics`` at their own
periods. This module only builds those
parts and wires them to parameters, subscriptions, services and publishers: results become
messages in ``frame_messages.py``, the map and trajectory live in ``map_state.py``, images are
accepted in ``camera_input.py``, TF is heard in ``tf_listener.py``. See ``docs/node.md`` for the
topics, services and parameters.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.publisher import Publisher
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from gct_stream_ros.ros import log_bridge, topics
from gct_stream_ros.ros.camera_info import CameraInfoSync
from gct_stream_ros.ros.camera_input import CameraFrame, camera_frame
from gct_stream_ros.ros.diagnostics import StreamDiagnostics
from gct_stream_ros.ros.frame_messages import map_message
from gct_stream_ros.ros.frame_processor import FrameProcessor
from gct_stream_ros.ros.image_decode import ImageDecodeError
from gct_stream_ros.ros.interrupts import recorded_sigint
from gct_stream_ros.ros.map_state import MapState
from gct_stream_ros.ros.mount import MountResolver
from gct_stream_ros.ros.options import NodeOptions
from gct_stream_ros.ros.parameters import NODE_OPTIONS, NodeParameters
from gct_stream_ros.ros.qos import input_qos, map_qos, output_qos
from gct_stream_ros.ros.result_scaler import ResultScaler
from gct_stream_ros.ros.scale_inputs import ScaleInputs
from gct_stream_ros.ros.session import SessionFactory, build_session, open_session
from gct_stream_ros.ros.status_reports import StatusReports
from gct_stream_ros.ros.tf import TfBroadcaster
from gct_stream_ros.ros.tf_listener import TfListener
from gct_stream_ros.ros.tf_tree import TfTree
from gct_stream_ros.ros.worker import FrameWorker
from gct_stream_ros.ros.world_tracker import WorldTracker
from gct_stream_ros.settings import NODE_NAME, SettingsError, Value
from gct_stream_ros.stream.scale.tracker import MetricScale

HOUSEKEEPING_PERIOD_S = 0.1
"""The map and diagnostics timers check their (changeable) periods this often."""
REJECTION_LOG_PERIOD_S = 5.0
STATUS_DEPTH = 10


class GctStreamNode(Node):
    """The streaming reconstruction node; ``session_factory`` lets tests run it without the model."""

    def __init__(self, node_name: str = NODE_NAME, session_factory: SessionFactory = build_session,
                 **node_options: object) -> None:
        super().__init__(node_name, **NODE_OPTIONS, **node_options)
        # Before the session exists: the engine's own warnings go to this node's log and /rosout.
        self._log_handler = log_bridge.attach(self.get_logger())
        try:
            self._settings = NodeParameters(self, self._on_parameters_changed)
            self.options = NodeOptions.from_values(self.values)
            self._session = open_session(session_factory, self.options.engine)
        except BaseException:
            # Untrack the half-built node: the context's shutdown would otherwise destroy it (no worker yet).
            log_bridge.detach(self._log_handler)
            super().destroy_node()
            raise
        output = self.options.output
        self.map_state = MapState(output.map_voxel_size, output.map_max_points, output.path_max_length)
        self.camera_info_sync: CameraInfoSync[tuple[Image | CompressedImage, float]] = CameraInfoSync(
            self.options.input.camera_info_sync)
        self._last_map_publish = time.monotonic()
        self._last_diagnostics = time.monotonic()

        self.outputs = self._create_outputs()
        image_topic = self._create_inputs()
        self._tf = TfBroadcaster(self)
        self._tf_tree = TfTree()
        self._tf_listener = TfListener(self, self._tf_tree, self.options.hears_tf)
        mounts = MountResolver(self._tf_listener.lookup, self._tf_tree, self.options.tf.mount_timeout)
        self._worlds = WorldTracker(mounts, self._tf_tree, self.map_state, self.get_logger())
        scale = MetricScale(self.options.scale)
        self._scale_inputs = ScaleInputs(self, self.options.scale, self.options.frames.odom,
                                         self.options.frames.base, self._tf_listener)
        self.diagnostics = StreamDiagnostics(f"{self.get_name()}: stream", [image_topic])
        self._status = StatusReports(self, self._session, self.diagnostics, scale,
                                     self.outputs[topics.STATUS], self.outputs[topics.DIAGNOSTICS])
        self._frames = FrameProcessor(
            session=self._session, worlds=self._worlds,
            scaler=ResultScaler(scale, self._scale_inputs, self._worlds, self.get_logger()),
            status=self._status, tf=self._tf, outputs=self.outputs, diagnostics=self.diagnostics,
            map_state=self.map_state, options=lambda: self.options, backlog=lambda: self.worker.backlog,
            context_ok=self.context.ok, logger=self.get_logger())
        self.worker: FrameWorker[CameraFrame] = FrameWorker(
            self._frames.process, self._frames.recover, self.options.queue.policy, self.options.queue.size)
        self.create_service(Trigger, topics.RESET_SERVICE, self._on_reset)
        self.create_service(Trigger, topics.SAVE_MAP_SERVICE, self._on_save_map)
        self.create_timer(HOUSEKEEPING_PERIOD_S, self._housekeeping)
        self._log_summary(image_topic)

    @property
    def values(self) -> dict[str, Value]:
        """The current parameter values (by dotted name)."""
        return self._settings.values

    # -- set-up -------------------------------------------------------------------------------------------

    def _create_outputs(self) -> dict[str, Publisher]:
        qos = output_qos(self.options.output.qos)
        publishers = {topic: self.create_publisher(topics.message_class(msgtype), topic, qos)
                      for topic, msgtype in topics.FRAME_OUTPUTS.items()}
        publishers[topics.MAP] = self.create_publisher(topics.message_class(topics.OUTPUT_TYPES[topics.MAP]),
                                                       topics.MAP, map_qos())
        publishers[topics.DIAGNOSTICS] = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        publishers[topics.STATUS] = self.create_publisher(DiagnosticStatus, topics.STATUS, STATUS_DEPTH)
        return publishers

    def _create_inputs(self) -> str:
        options = self.options
        qos = input_qos(options.input.qos, every_frame=options.queue.policy == "all")
        if options.input.transport == "compressed":
            subscription = self.create_subscription(CompressedImage, topics.COMPRESSED_IMAGE, self._on_image,
                                                    qos)
        else:
            subscription = self.create_subscription(Image, topics.IMAGE, self._on_image, qos)
        self.create_subscription(CameraInfo, topics.CAMERA_INFO_INPUT, self._on_camera_info, qos)
        return subscription.topic_name

    def _log_summary(self, image_topic: str) -> None:
        engine, queue = self.options.engine, self.options.queue
        stats = self._status.stats
        self.get_logger().info(
            f"model {engine.preset} ({engine.weights or 'random weights'}) on {stats.device} "
            f"{stats.dtype}, input width {engine.image_width}, {engine.num_scale_frames} scale "
            f"frames, keyframes {engine.keyframe_mode}, window {engine.window_mode}, "
            f"cache {engine.cache_description}; "
            f"listening on {image_topic} (queue {queue.policy}/{queue.size}); "
            f"TF via {self._tf.backend}, hearing {', '.join(self._tf_listener.topics) or 'none'}; "
            f"scale {self.options.scale.source}"
            f"{f' ({self._scale_inputs.description})' if self._scale_inputs.description else ''}")

    # -- executor thread: inputs and services -------------------------------------------------------------

    def _on_camera_info(self, message: CameraInfo) -> None:
        for paired in self.camera_info_sync.add_info(message):
            self._accept(*paired.item, paired.info)

    def _on_image(self, message: Image | CompressedImage) -> None:
        self.diagnostics.image_received()
        unmatched = self.camera_info_sync.unmatched
        for paired in self.camera_info_sync.add_image((message, time.monotonic()), message.header.stamp):
            self._accept(*paired.item, paired.info)
        if self.camera_info_sync.unmatched > unmatched:
            self.diagnostics.dropped += self.camera_info_sync.unmatched - unmatched
            self.get_logger().warning(
                "images dropped: no camera_info came with their stamp (if the camera driver stamps images "
                "and camera_info differently, set input.camera_info_sync:=latest)",
                throttle_duration_sec=REJECTION_LOG_PERIOD_S)

    def _accept(self, message: Image | CompressedImage, received_s: float, info: CameraInfo | None) -> None:
        """An image paired with its camera_info (None: none has come yet) goes to the model if it is valid."""
        try:
            frame = camera_frame(message, info, self.options.frames.camera_override,
                                 self.options.engine.image_width, received_s)
        except ImageDecodeError as error:
            self._reject(str(error))
            return
        # Here, beside the worker's step, not on its critical path (docs/architecture.md, "Threads").
        frame.prepared = self._session.prepare(frame.image)
        self.diagnostics.dropped += self.worker.submit(frame)
        if self.worker.behind:
            self.get_logger().warning(f"{self.worker.backlog} frames waiting: the model is falling behind "
                                      f"the input", throttle_duration_sec=REJECTION_LOG_PERIOD_S)

    def _reject(self, reason: str) -> None:
        self.diagnostics.rejected += 1
        self.get_logger().warning(f"rejected image message: {reason}",
                                  throttle_duration_sec=REJECTION_LOG_PERIOD_S)

    def _on_parameters_changed(self, values: dict[str, Value]) -> None:
        self.options = options = NodeOptions.from_values(values)
        if options.hears_tf:
            self._tf_listener.hear_tf()
        if self.map_state.reconfigure(options.output.map_voxel_size, options.output.map_max_points,
                                      options.output.path_max_length):
            self.get_logger().info("fused map settings changed: the map restarts empty")

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        dropped = self.worker.clear()
        self._frames.request_reset()
        # Also keeps out a frame of the old world that a step in flight would add after this.
        self.map_state.clear_map()
        self.get_logger().info(f"reset: session, map and path cleared ({dropped} queued frames dropped)")
        response.success, response.message = True, "session, map and path cleared"
        return response

    def _on_save_map(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        # strftime: a pattern such as ~/maps/%Y%m%d-%H%M%S gives every call its own folder.
        folder = Path(os.path.expanduser(time.strftime(self.options.map_files.save_dir)))
        if not self.map_state.poses:
            response.success = False
            response.message = (f"nothing to save: no frame since the start or the last reset; {folder} is "
                                f"left as it is")
            self.get_logger().warning(f"save_map refused: {response.message}")
            return response
        try:
            saved = self.map_state.save(folder)
        except OSError as error:
            response.success, response.message = False, f"cannot write to {folder}: {error}"
            self.get_logger().error(response.message)
            return response
        response.success = True
        response.message = (f"{saved.map_path.resolve()} ({saved.points} points); "
                            f"{saved.trajectory_path.resolve()} ({saved.poses} poses)")
        self.get_logger().info(f"map saved: {response.message}")
        return response

    def _housekeeping(self) -> None:
        now = time.monotonic()
        period = self.options.output.map_period
        if period > 0 and now - self._last_map_publish >= period:
            self._last_map_publish = now
            self._publish_map()
        period = self.options.diagnostics.period
        if period > 0 and now - self._last_diagnostics >= period:
            self._last_diagnostics = now
            self._publish_diagnostics()

    def _publish_map(self) -> None:
        changed = self.map_state.changed_map()
        if changed is not None:
            topic, message = map_message(*changed, self.options)
            self.outputs[topic].publish(message)

    @property
    def idle(self) -> bool:
        """No frame is waiting or being stepped, and every result is published."""
        return self.worker.idle and self._frames.published  # the worker first: its last frame is queued then

    def _publish_diagnostics(self) -> None:
        self._status.publish_diagnostics(self.options.diagnostics, self.worker.backlog, len(self.map_state))

    def destroy_node(self) -> None:
        self._worlds.stop_waiting()
        if not self.worker.stop(timeout_s=2.0):
            self.get_logger().warning("the worker is still inside a model step; leaving it behind")
        else:
            # A scale phase at shutdown could take seconds (SIGINT must stop the node within 2 s): count them.
            waiting = self._session.stats().frames_pending
            if waiting:
                self.get_logger().warning(f"shutdown: {waiting} frame(s) waiting for the scale phase were "
                                          f"not processed")
        self._frames.close()
        log_bridge.detach(self._log_handler)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    with recorded_sigint() as sigint:
        rclpy.init(args=args)
        # Made before the node: a signal during the (possibly long) model load must not find it missing.
        executor = SingleThreadedExecutor()
        node = None
        try:
            with sigint.clean_stop():
                node = GctStreamNode()
                executor.add_node(node)
                executor.spin()
        except SettingsError as error:
            print(f"gct_stream_node: invalid parameters: {error}", file=sys.stderr)
            return 2
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
