"""Counters and timings of a streaming session, for logs, diagnostics and the offline tool."""

from __future__ import annotations

from dataclasses import dataclass

from gct_stream_ros.cache.base import CacheStats


@dataclass
class StepTimes:
    """Wall-clock durations of network steps (a phase-1 step counts once)."""

    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0

    def record(self, milliseconds: float) -> None:
        self.count += 1
        self.total_ms += milliseconds
        self.max_ms = max(self.max_ms, milliseconds)

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count if self.count else 0.0


@dataclass
class SessionStats:
    frames_pushed: int
    """Frames given to the session (since it was created)."""
    frames_emitted: int
    """First results handed out (revisions not counted)."""
    frames_pending: int
    """Frames waiting for a scale phase (not yet emitted)."""
    frames_dropped: int
    """Frames that never got a result: they were waiting for a scale phase when the sequence was reset."""
    revisions: int
    """Re-estimates handed out (window overlaps)."""
    keyframes: int
    """Streaming frames stored by the network (scale frames not counted)."""
    sequence: int
    """Index of the current sequence (world frame); increments on reset and on an input size change."""
    window: int
    """Index of the current window within the sequence."""
    frames_stored: int
    """Frames the network holds in its caches now."""
    step_times: StepTimes
    cache: CacheStats | None = None
    device: str = "cpu"
    dtype: str = "float32"
