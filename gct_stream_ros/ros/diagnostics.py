"""Health on ``/diagnostics``: rates, drops, rejections, model timings, cache use, and a warning when no image
arrived for a while (listing the topics, as users of camera pipelines expect) or when too many of the images
received since the previous report were dropped or rejected.

The log gets a warning when such a condition starts, a reminder at most every ``REMINDER_PERIOD_S``
while it lasts and one line when it ends: a camera that is off for an hour is one warning, not 720.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from gct_stream_ros.stream.scale.state import ScaleState
from gct_stream_ros.stream.stats import SessionStats

REMINDER_PERIOD_S = 60.0
"""A warning condition that lasts is logged again this often."""


def session_values(stats: SessionStats) -> dict[str, str]:
    """The engine's part of the report."""
    values = {
        "model step mean [ms]": f"{stats.step_times.mean_ms:.1f}",
        "model step max [ms]": f"{stats.step_times.max_ms:.1f}",
        "keyframes": str(stats.keyframes),
        "frames dropped at resets": str(stats.frames_dropped),
        "frames stored": str(stats.frames_stored),
        "window": str(stats.window),
        "sequence": str(stats.sequence),
        "device": f"{stats.device} ({stats.dtype})",
    }
    if stats.cache is not None:
        values["cache tokens per layer"] = str(max(stats.cache.tokens_per_layer, default=0))
        values["cache bytes"] = str(stats.cache.bytes_allocated)
        values["camera-head cache bytes"] = str(stats.cache.camera_head_bytes)
    return values


def scale_values(state: ScaleState) -> dict[str, str]:
    """The metric scale's part: what the outputs are in, from which source, how sure."""
    uncertainty = "" if state.relative_uncertainty is None else f"{100 * state.relative_uncertainty:.2f}"
    return {
        "scale": state.describe(),
        "scale source": state.source,
        "scale [m per model unit]": f"{state.scale:.6g}" if state.metric else "unscaled",
        "scale uncertainty [%]": uncertainty,
        "scale samples": str(state.samples),
    }


class StreamDiagnostics:
    """Counts what happens to the input and turns it into one ``DiagnosticStatus`` per report."""

    def __init__(self, name: str, input_topics: Sequence[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.input_topics = list(input_topics)
        self._clock = clock
        self.received = 0
        self.rejected = 0
        self.dropped = 0
        self.processed = 0
        self.errors = 0
        self._started = clock()
        self._last_image: float | None = None
        self._last_report = (self._started, 0, 0, 0)
        self._condition = ""
        """The warning condition of the last report ('' when OK)."""
        self._condition_message = ""
        self._condition_logged_at = 0.0
        self.log_line: tuple[int, str] | None = None
        """``(level, text)`` the last report asks to log now (``DiagnosticStatus`` levels), or None."""

    def image_received(self) -> None:
        self.received += 1
        self._last_image = self._clock()

    def seconds_without_image(self) -> float:
        return self._clock() - (self._started if self._last_image is None else self._last_image)

    def report(self, stamp: Time, no_data_timeout_s: float, max_drop_rate: float,
               extra: dict[str, str] | None = None, hardware_id: str = "") -> DiagnosticArray:
        """The status since the previous report: WARN when no image came for ``no_data_timeout_s``, or when
        more than ``max_drop_rate`` of the images received since then were dropped or rejected."""
        now = self._clock()
        since, received_before, processed_before, lost_before = self._last_report
        elapsed = max(now - since, 1e-9)
        lost = self.dropped + self.rejected
        self._last_report = (now, self.received, self.processed, lost)
        received, lost = self.received - received_before, lost - lost_before
        values = {
            "input rate [Hz]": f"{(self.received - received_before) / elapsed:.2f}",
            "processed rate [Hz]": f"{(self.processed - processed_before) / elapsed:.2f}",
            "frames received": str(self.received),
            "frames processed": str(self.processed),
            "frames dropped": str(self.dropped),
            "messages rejected": str(self.rejected),
            "step errors": str(self.errors),
            **(extra or {}),
        }
        silent = self.seconds_without_image()
        if silent >= no_data_timeout_s:
            level, condition = DiagnosticStatus.WARN, "no image"
            message = f"no image received for {silent:.1f} s on {', '.join(self.input_topics)}"
        elif received and lost / received > max_drop_rate:
            level, condition = DiagnosticStatus.WARN, "drops"
            message = (f"{lost} of {received} images dropped or rejected since the last report "
                       f"({lost / received:.0%}, more than {max_drop_rate:.0%})")
        else:
            level, condition, message = DiagnosticStatus.OK, "", "streaming"
        self._decide_log_line(now, level, condition, message)
        status = DiagnosticStatus(level=level, name=self.name, message=message, hardware_id=hardware_id,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        return DiagnosticArray(header=Header(stamp=stamp), status=[status])

    def _decide_log_line(self, now: float, level: int, condition: str, message: str) -> None:
        self.log_line = None
        reminder_due = now - self._condition_logged_at >= REMINDER_PERIOD_S
        if condition and (condition != self._condition or reminder_due):
            self.log_line, self._condition_logged_at = (level, message), now
        elif self._condition and not condition:
            self.log_line = DiagnosticStatus.OK, f"streaming normally again (was: {self._condition_message})"
        self._condition, self._condition_message = condition, message
