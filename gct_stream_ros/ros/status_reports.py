"""The node's health outputs: the per-frame ``status`` (publisher thread) and the periodic ``/diagnostics``
(executor thread), both from the session statistics the worker read last.

Only the worker calls the session; ``/diagnostics`` publishes the copy kept here, with the latest
``status`` appended. Topics and fields: docs/node.md.
"""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.publisher import Publisher

from gct_stream_ros.ros.camera_input import CameraFrame
from gct_stream_ros.ros.diagnostics import StreamDiagnostics, scale_values, session_values
from gct_stream_ros.ros.options import DiagnosticsOptions
from gct_stream_ros.ros.session import Session
from gct_stream_ros.ros.tracking_status import TrackingState, TrackingStatus, gpu_memory_bytes
from gct_stream_ros.stream.scale.tracker import MetricScale
from gct_stream_ros.stream.stats import SessionStats

SESSION_STATS_PERIOD_S = 0.5
"""The worker reads the session's statistics (for ``status`` and ``/diagnostics``) at most this often while
tracking with frames waiting, and after every other frame: a KV cache's statistics walk all its layers
(2-7 ms for the full model's 24 layers x 64 frames of the dense cache on this machine), too much for every
frame when the worker is behind."""


class StatusReports:
    """Publishes ``status`` and ``/diagnostics`` for ``node``; ``scale`` says what the outputs are in."""

    def __init__(self, node: Node, session: Session, diagnostics: StreamDiagnostics, scale: MetricScale,
                 status: Publisher, diagnostics_publisher: Publisher) -> None:
        self._node, self._session, self._diagnostics, self._scale = node, session, diagnostics, scale
        self._status_publisher, self._diagnostics_publisher = status, diagnostics_publisher
        self._last_status: DiagnosticStatus | None = None
        self.stats: SessionStats = session.stats()
        """The session's statistics as the worker last read them (the executor never calls the session)."""
        self._stats_read_s = time.monotonic()

    def read_stats(self, fresh: bool) -> SessionStats:
        """Worker thread: the session's statistics, read again when ``fresh`` or older than
        ``SESSION_STATS_PERIOD_S``."""
        now = time.monotonic()
        if fresh or now - self._stats_read_s >= SESSION_STATS_PERIOD_S:
            self.stats, self._stats_read_s = self._session.stats(), now
        return self.stats

    def publish_status(self, state: TrackingState, reason: str, frame: CameraFrame, step_ms: float,
                       stats: SessionStats) -> None:
        """Publisher thread: the ``status`` of ``frame``; ``stats`` as ``read_stats`` gave them after its
        step."""
        status = TrackingStatus(
            state=state, reason=reason, stamp_ns=frame.stamp_ns, step_ms=step_ms,
            latency_ms=(time.monotonic() - frame.received_s) * 1000.0,
            frames_dropped=self._diagnostics.dropped, keyframes=stats.keyframes,
            cached_tokens=max(stats.cache.tokens_per_layer, default=0) if stats.cache is not None else 0,
            gpu_memory_bytes=gpu_memory_bytes(stats.device), sequence=stats.sequence)
        message = status.message(f"{self._node.get_name()}: tracking", stats.device)
        # What the frame's outputs are in (metres or model units), as /diagnostics says it.
        message.values.extend(KeyValue(key=key, value=value)
                              for key, value in scale_values(self._scale.state).items())
        self._last_status = message
        self._status_publisher.publish(message)

    def publish_diagnostics(self, options: DiagnosticsOptions, queued_frames: int, map_points: int) -> None:
        """Executor thread: one ``/diagnostics`` report; its warnings logged as ``StreamDiagnostics`` says."""
        extra = session_values(self.stats)
        extra["queued frames"] = str(queued_frames)
        extra["map points"] = str(map_points)
        extra.update(scale_values(self._scale.state))
        report = self._diagnostics.report(self._node.get_clock().now().to_msg(), options.no_data_timeout,
                                          options.max_drop_rate, extra, hardware_id=extra["device"])
        if self._diagnostics.log_line is not None:
            level, text = self._diagnostics.log_line
            if level == DiagnosticStatus.OK:
                self._node.get_logger().info(text)
            else:
                self._node.get_logger().warning(text)
        if self._last_status is not None:
            report.status.append(self._last_status)
        self._diagnostics_publisher.publish(report)
