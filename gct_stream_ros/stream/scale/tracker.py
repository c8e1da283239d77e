"""The scale of the current sequence: the configured source fed frame by frame, smoothed.

A new sequence (a reset, an input size change) is a new world with its own unknown scale: the
estimate starts again and the outputs are unscaled until the source gives one. A new window of
the online windowed mode is already aligned by Sim(3) into the sequence's first window, so the
applied scale carries on, but the source restarts its samples: the new window's own estimate
takes over, smoothly, once it has ``min_samples``. Revisions (window overlaps) add no samples.

Smoothing: each new sample's estimate moves the applied scale ``smoothing`` of the way (geometrically)
towards it, so one odd estimate cannot make the outputs jump; the first estimate is applied as is.
"""

from __future__ import annotations

from gct_stream_ros.stream.result import FrameResult
from gct_stream_ros.stream.scale.camera_height import CameraHeightScale
from gct_stream_ros.stream.scale.depth import DepthScale
from gct_stream_ros.stream.scale.odometry import OdometryScale
from gct_stream_ros.stream.scale.options import ScaleOptions
from gct_stream_ros.stream.scale.reference import ScaleReference
from gct_stream_ros.stream.scale.state import ScaleState

MEASURING_SOURCES = {"odometry": OdometryScale, "depth": DepthScale, "camera_height": CameraHeightScale}


class MetricScale:
    def __init__(self, options: ScaleOptions) -> None:
        self.options = options.validate()
        self._sequence: int | None = None
        self._window = 0
        self._source = None
        self.state = self._initial_state()
        self.became_metric = False
        """True when the last ``update`` gave its sequence's first estimate (the outputs turn metric)."""
        self._earlier_states: dict[int, ScaleState] = {}

    @property
    def measuring(self) -> bool:
        """True for the sources that estimate the scale (the outputs are unscaled until they have)."""
        return self.options.source in MEASURING_SOURCES

    @property
    def needs(self) -> str:
        """What the source must be fed: 'odometry', 'depth' or '' (nothing beyond the results)."""
        return self.options.source if self.options.source in ("odometry", "depth") else ""

    def update(self, result: FrameResult, reference: ScaleReference | None = None) -> ScaleState:
        """Feed one result (and what the source measured at its stamp); return the state to apply to it."""
        self.became_metric = False
        if result.sequence != self._sequence:
            if self._sequence is not None:
                self._earlier_states[self._sequence] = self.state
            self._sequence, self._window = result.sequence, result.window
            self.state = self._initial_state()
            source_type = MEASURING_SOURCES.get(self.options.source)
            self._source = source_type(self.options) if source_type else None
        if self._source is None or result.revision:
            return self.state
        if result.window != self._window:
            self._window = result.window
            self._source.restart_window()
        samples = self._source.samples
        added_before = samples.added
        self._source.add(result, reference or ScaleReference())
        if samples.added == added_before or len(samples) < self.options.min_samples:
            return self.state
        estimate = samples.estimate()
        scale = estimate.value
        if self.state.metric:
            scale = self.state.scale * (estimate.value / self.state.scale) ** self.options.smoothing
        self.became_metric = not self.state.metric
        self.state = ScaleState(self.options.source, scale, True, estimate.relative_uncertainty,
                                estimate.inliers)
        return self.state

    @property
    def sequence(self) -> int | None:
        """The sequence of the last update (None before the first)."""
        return self._sequence

    def state_of(self, sequence: int) -> ScaleState:
        """The state of ``sequence``: the current one's, or the last of an earlier one (it cannot change)."""
        if sequence == self._sequence:
            return self.state
        return self._earlier_states.get(sequence, self._initial_state())

    def _initial_state(self) -> ScaleState:
        if self.options.source == "fixed":
            return ScaleState("fixed", self.options.factor, True, 0.0)
        return ScaleState(self.options.source)
