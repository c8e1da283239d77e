"""A measuring scale source: samples of metres per model unit, one window of them at a time."""

from __future__ import annotations

from gct_stream_ros.stream.result import FrameResult
from gct_stream_ros.stream.scale.options import ScaleOptions
from gct_stream_ros.stream.scale.ratio_window import RatioWindow
from gct_stream_ros.stream.scale.reference import ScaleReference


class ScaleSource:
    """Subclasses turn results (and what the sensor measured at their stamps) into ``samples``."""

    def __init__(self, options: ScaleOptions) -> None:
        self.options = options
        self.samples = RatioWindow(options.window, options.outlier_threshold)

    def restart_window(self) -> None:
        """A new window of the windowed mode estimates from its own samples."""
        self.samples.clear()

    def add(self, result: FrameResult, reference: ScaleReference) -> None:
        raise NotImplementedError
