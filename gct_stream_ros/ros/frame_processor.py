"""The worker thread's side of the node: one model step per frame, its outputs and ``status``; the flush
that ends a sequence; the recovery from a failed step.

A sequence ends when a stamp goes backwards (a bag restarted) or ``reset`` is called: the frames waiting
for the scale phase are processed first (a shorter scale phase) and published, then the session starts
again. A failed step (e.g. out of GPU memory) is logged and the session restarts; frames it leaves
behind are counted. Only this thread calls the session (docs/node.md, "Behaviour").
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
from gct_stream_ros.stream.result import FrameResult

InvalidHandle = rclpy_implementation.InvalidHandle


class FrameProcessor:
    """``process`` and ``recover`` are the ``FrameWorker``'s callbacks; ``options`` gives the current
    options (they change with parameters), ``context_ok`` whether ROS is still up."""

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
        results = self._session.push(frame.image, frame.stamp_ns)
        step_ms = (time.monotonic() - started) * 1000.0
        tracking = any(r.stamp_ns == frame.stamp_ns and not r.revision for r in results)
        # Read before the results are counted: a /diagnostics report counting this frame has its statistics.
        # Throttled only while tracking with frames waiting, where the read would slow the worker down.
        self._status.read_stats(fresh=not tracking or not self._backlog())
        for result in results:
            self._publish(self._scaler.in_metres(result, frame.frame_id, self._last_input_hw), frame.frame_id)
        restart_reason = self._worlds.take_restart_reason()
        if restart_reason:
            state = TrackingState.RESET
        elif tracking:
            state = TrackingState.TRACKING
        else:
            state = TrackingState.INITIALISING
        self._status.publish_status(state, restart_reason, frame, step_ms)

    def recover(self, error: Exception) -> None:
        """A step failed (e.g. out of GPU memory): log it, start a new sequence, keep going."""
        if not self._context_ok():
            return  # a signal shut ROS down under the running step: publishing failed, nothing is wrong
        self._diagnostics.errors += 1
        self._logger.error(f"step failed, session reset: {error!r}\n{traceback.format_exc(limit=5)}")
        self._reset_session("")
        self._status.read_stats(fresh=True)
        self._worlds.take_restart_reason()  # the status says lost
        if self._frame_in_progress is not None:
            frame, started = self._frame_in_progress
            # A node destroyed under the step cannot publish any more: nobody is left to tell.
            with contextlib.suppress(InvalidHandle):
                self._status.publish_status(TrackingState.LOST, f"step failed: {error!r}", frame,
                                            (time.monotonic() - started) * 1000.0)

    def _end_sequence(self, reason: str) -> None:
        """Answer the frames waiting for the scale phase (a shorter one), then start a new sequence."""
        for result in self._session.flush():
            self._publish(self._scaler.in_metres(result, self._last_frame_id, self._last_input_hw),
                          self._last_frame_id)
        self._reset_session(reason)

    def _reset_session(self, reason: str) -> None:
        """A new sequence; ``reason`` goes into the status of the frame in progress."""
        self._session.reset()
        self._worlds.restart(reason)
        self._last_stamp_ns = None

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
