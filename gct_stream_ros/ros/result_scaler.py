"""Results in metres: each result scaled by its sequence's metric scale, estimated from what the scale
source (``scale_inputs.py``) measured at the result's stamp (docs/node.md, "Metric scale").

When the first estimate arrives the outputs change units, so the world frame restarts: a map or path
mixing model units and metres would be wrong.
"""

from __future__ import annotations

from rclpy.impl.rcutils_logger import RcutilsLogger

from gct_stream_ros.ros.scale_inputs import ScaleInputs
from gct_stream_ros.ros.world_tracker import WorldTracker
from gct_stream_ros.stream.result import FrameResult
from gct_stream_ros.stream.scale.apply import scale_result
from gct_stream_ros.stream.scale.tracker import MetricScale


class ResultScaler:
    """Worker thread: ``in_metres`` for every result, in stamp order."""

    def __init__(self, scale: MetricScale, inputs: ScaleInputs, worlds: WorldTracker,
                 logger: RcutilsLogger) -> None:
        self._scale, self._inputs, self._worlds, self._logger = scale, inputs, worlds, logger

    def in_metres(self, result: FrameResult, camera_frame: str, input_hw: tuple[int, int]) -> FrameResult:
        """The result scaled by its sequence's metric scale (as it is while no estimate exists)."""
        reference = None
        if self._scale.needs and not result.revision:
            reference = self._inputs.reference(result.stamp_ns, camera_frame, input_hw)
        state = self._scale.update(result, reference)
        if self._scale.became_metric:
            self._logger.info(f"metric scale: {state.describe()}; map, path and trajectory restart in metres")
            self._worlds.restart(self._worlds.take_restart_reason())  # keeps a reset's reason for the status
        return scale_result(result, state.scale) if state.metric else result
