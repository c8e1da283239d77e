"""The worker thread's side of the node: one model step per frame; the flush that ends a sequence; the
recovery from a failed step. A publisher thread turns the results into messages and publishes them, with
``status``, in the order the worker handed them over.

A sequence ends when a stamp goes backwards (a bag restarted) or ``reset`` is called: the frames waiting
for the scale phase are processed first (a shorter scale phase) and published, then the session starts
again. A failed step (e.g. out of GPU memory) is logged and the session restarts; frames it leaves
behind are counted. Only the worker calls the session past ``prepare``; world, map and scale state
change only on the publisher thread, so resets stay in order with the results (docs/node.md,
"Behaviour"; docs/architecture.md, "Threads").
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable

from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.impl.rcutils_logger import RcutilsLogger
from rclpy.publisher import Publisher

from gct_stream_ros.ros.camera_input import CameraFrame
from gct_stream_ros.ros.diagnostics import StreamDiagnostics
from gct_stream_ros.ros.frame_messages import frame_messages
from gct_stream_ros.ros.map_state import MapState
from gct_stream_ros.ros.options import NodeOptions
from gct_stream_ros.ros.result_scaler import ResultScaler
from gct_stream_ros.ros.session import Session
from gct_stream_ros.ros.status_reports import StatusReports
from gct_stream_ros.ros.tf import TfBroadcaster
from gct_stream_ros.ros.tracking_status import TrackingState
from gct_stream_ros.ros.world_tracker import WorldTracker
from gct_stream_ros.stream.ordered_worker import OrderedWorker
from gct_stream_ros.stream.result import FrameResult
from gct_stream_ros.stream.stats import SessionStats

InvalidHandle = rclpy_implementation.InvalidHandle
PUBLISH_DEPTH = 2
"""Frames whose messages wait for the publisher thread at most: publishing (~4 ms) is far shorter than a
step, so a little slack suffices; a stalled publisher then holds the worker back (bounded memory)."""


class FrameProcessor:
    """``process`` and ``recover`` are the ``FrameWorker``'s callbacks; ``options`` gives the current
    options (they change with parameters), ``context_ok`` whether ROS is still up; ``close`` stops the
    publisher thread after publishing what is queued."""

    def __init__(self, *, session: Session, worlds: WorldTracker, scaler: ResultScaler, status: StatusReports,
                 tf: TfBroadcaster, outputs: dict[str, Publisher], diagnostics: StreamDiagnostics,
                 map_state: MapState, options: Callable[[], NodeOptions], backlog: Callable[[], int],
                 context_ok: Callable[[], bool], logger: RcutilsLogger) -> None:
        self._session, self._worlds, self._scaler, self._status = session, worlds, scaler, status
        self._tf, self._outputs, self._diagnostics, self._map_state = tf, outputs, diagnostics, map_state
        self._options, self._backlog, self._context_ok, self._logger = options, backlog, context_ok, logger
        self._reset_requested = threading.Event()
        self._frame_in_progress: tuple[CameraFrame, float] | None = None
        self._last_stamp_ns: int | None = None
        self._last_frame_id = ""
        self._last_input_hw = (0, 0)
        """Camera frame and image size of the last frame: the flush at a sequence's end answers its frames."""
        self._publisher = OrderedWorker(PUBLISH_DEPTH, "gct_stream_publisher", self._publish_failed)

    @property
    def published(self) -> bool:
        """Everything the worker handed over is published."""
        return self._publisher.idle

    def close(self) -> None:
        self._publisher.close()

    def request_reset(self) -> None:
        """Any thread: the next frame starts a new sequence (after the flush of the current one)."""
        self._reset_requested.set()

    def process(self, frame: CameraFrame) -> None:
        started = time.monotonic()
        self._frame_in_progress = (frame, started)
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            self._end_sequence("reset service")
        if self._last_stamp_ns is not None and frame.stamp_ns < self._last_stamp_ns:
            self._logger.warning(f"stamp went backwards ({self._last_stamp_ns} -> {frame.stamp_ns} ns; "
                                 f"bag restarted?): session and map reset")
            self._end_sequence("stamp went backwards")
        self._last_stamp_ns, self._last_frame_id = frame.stamp_ns, frame.frame_id
        self._last_input_hw = frame.image.shape[:2]
        results = self._session.push_prepared(frame.prepared, frame.stamp_ns)
        step_ms = (time.monotonic() - started) * 1000.0
        tracking = any(r.stamp_ns == frame.stamp_ns and not r.revision for r in results)
        # Read before the results are counted: a /diagnostics report counting this frame has its statistics.
        # Throttled only while tracking with frames waiting, where the read would slow the worker down.
        stats = self._status.read_stats(fresh=not tracking or not self._backlog())
        self._publisher.submit(self._publish_frame, frame, self._last_input_hw, results, tracking, step_ms,
                               stats)

    def recover(self, error: Exception) -> None:
        """A step failed (e.g. out of GPU memory): log it, start a new sequence, keep going."""
        if not self._context_ok():
            return  # a signal shut ROS down under the running step: publishing failed, nothing is wrong
        self._diagnostics.errors += 1
        self._logger.error(f"step failed, session reset: {error!r}\n{traceback.format_exc(limit=5)}")
        self._reset_session()
        stats = self._status.read_stats(fresh=True)
        if self._frame_in_progress is not None:
            frame, started = self._frame_in_progress
            self._publisher.submit(self._publish_lost, frame, f"step failed: {error!r}",
                                   (time.monotonic() - started) * 1000.0, stats)

    def _end_sequence(self, reason: str) -> None:
        """Answer the frames waiting for the scale phase (a shorter one), then start a new sequence."""
        results = self._session.flush()
        self._reset_session()
        self._publisher.submit(self._publish_flush, results, self._last_frame_id, self._last_input_hw, reason)

    def _reset_session(self) -> None:
        self._session.reset()
        self._last_stamp_ns = None

    # -- publisher thread ---------------------------------------------------------------------------------

    def _publish_frame(self, frame: CameraFrame, input_hw: tuple[int, int], results: list[FrameResult],
                       tracking: bool, step_ms: float, stats: SessionStats) -> None:
        for result in results:
            self._publish(self._scaler.in_metres(result, frame.frame_id, input_hw), frame.frame_id)
        restart_reason = self._worlds.take_restart_reason()
        if restart_reason:
            state = TrackingState.RESET
        elif tracking:
            state = TrackingState.TRACKING
        else:
            state = TrackingState.INITIALISING
        self._status.publish_status(state, restart_reason, frame, step_ms, stats)

    def _publish_flush(self, results: list[FrameResult], camera_frame: str, input_hw: tuple[int, int],
                       reason: str) -> None:
        """The flushed results, then a new world frame; ``reason`` goes into the next frame's status."""
        for result in results:
            self._publish(self._scaler.in_metres(result, camera_frame, input_hw), camera_frame)
        self._worlds.restart(reason)

    def _publish_lost(self, frame: CameraFrame, reason: str, step_ms: float, stats: SessionStats) -> None:
        self._worlds.restart("")
        self._worlds.take_restart_reason()  # the status says lost
        # A node destroyed under the step cannot publish any more: nobody is left to tell.
        with contextlib.suppress(InvalidHandle):
            self._status.publish_status(TrackingState.LOST, reason, frame, step_ms, stats)

    def _publish_failed(self, error: Exception) -> None:
        """Publishing a frame failed: log it; the next frame is published as usual."""
        if not self._context_ok():
            return  # a signal shut ROS down while publishing: nothing is wrong
        self._diagnostics.errors += 1
        self._logger.error(f"publishing a frame failed: {error!r}\n{traceback.format_exc(limit=5)}")

    def _publish(self, result: FrameResult, camera_frame: str) -> None:
        options = self._options()
        if result.revision and options.output.revisions == "ignore":
            return
        world = self._worlds.world_for(result, camera_frame, options.frames, options.tf)
        frame = frame_messages(result, camera_frame, world, self._worlds.odom, options, self._map_state,
                               first_estimate=not result.revision, wanted=self._wanted)
        if not result.revision:
            self._diagnostics.processed += 1
            self._tf.send(self._worlds.sendable(frame.transforms, options.tf))
        for topic, message in frame.outputs:
            self._outputs[topic].publish(message)

    def _wanted(self, topic: str) -> bool:
        """Lazy outputs: nothing is computed for a topic nobody listens to."""
        return self._outputs[topic].get_subscription_count() > 0
