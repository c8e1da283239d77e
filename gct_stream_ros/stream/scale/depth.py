"""Scale from an aligned metric depth image (RGB-D or stereo): sensor depth over model depth.

The sensor image lies on the input image's pixel grid (registered to the colour camera), at
the input's resolution or another one (then its pixels are scaled, as depth_image_proc does).
Each model pixel is carried to the input image through the two intrinsics (the model image is
a resize and crop of the input) and takes the nearest sensor pixel. Pixels where either depth
is invalid, the sensor depth is outside [``depth_min``, ``depth_max``] or the model's
confidence is below ``min_confidence`` are left out; a frame with fewer than
``MIN_PIXEL_FRACTION`` of its pixels left gives no sample. The model's pixels are evenly
decimated to about ``MAX_PIXELS`` (a median needs no more; the CPU time stays a few ms per
frame). Each frame gives one sample, the median ratio of its pixels (robust to missing pixels,
edges and reflections); the window then rejects bad frames.
"""

from __future__ import annotations

import math

import numpy as np

from gct_stream_ros.stream.result import FrameResult
from gct_stream_ros.stream.scale.options import ScaleOptions
from gct_stream_ros.stream.scale.reference import ScaleReference
from gct_stream_ros.stream.scale.source import ScaleSource

MIN_PIXEL_FRACTION = 0.05
MAX_PIXELS = 20_000


def sensor_depth_at_model_pixels(sensor_depth: np.ndarray, input_hw: tuple[int, int],
                                 model_hw: tuple[int, int], intrinsics: np.ndarray,
                                 intrinsics_input: np.ndarray, stride: int = 1) -> np.ndarray:
    """Sensor depth (float64) at every ``stride``-th model pixel of ``model_hw`` in both directions, i.e.
    ``[ceil(H / stride), ceil(W / stride)]``; NaN where a model pixel is outside the sensor image.

    ``intrinsics`` is the model's [3, 3] matrix, ``intrinsics_input`` the same camera for the input
    image of size ``input_hw``.
    """
    model_rows, model_columns = np.arange(0, model_hw[0], stride), np.arange(0, model_hw[1], stride)
    to_input = intrinsics_input @ np.linalg.inv(intrinsics)  # affine: a resize and a crop
    sensor_h, sensor_w = sensor_depth.shape
    scale_x, scale_y = sensor_w / input_hw[1], sensor_h / input_hw[0]
    columns = np.rint((to_input[0, 0] * model_columns + to_input[0, 2]) * scale_x).astype(np.int64)
    rows = np.rint((to_input[1, 1] * model_rows + to_input[1, 2]) * scale_y).astype(np.int64)
    inside_columns = (columns >= 0) & (columns < sensor_w)
    inside_rows = (rows >= 0) & (rows < sensor_h)
    sampled = np.full((len(rows), len(columns)), np.nan)
    picked = np.asarray(sensor_depth)[np.ix_(rows[inside_rows], columns[inside_columns])]
    sampled[np.ix_(inside_rows, inside_columns)] = picked
    return sampled


def depth_ratio(model_depth: np.ndarray, confidence: np.ndarray, sensor_depth: np.ndarray,
                options: ScaleOptions) -> float | None:
    """Median of sensor / model depth over the usable pixels; None when too few are usable."""
    model = np.asarray(model_depth, dtype=np.float64)
    low, high = options.depth_min, options.depth_max
    with np.errstate(invalid="ignore"):
        usable = (np.isfinite(sensor_depth) & (sensor_depth >= low) & (sensor_depth <= high)
                  & (sensor_depth > 0)
                  & np.isfinite(model) & (model > 0) & (np.asarray(confidence) >= options.min_confidence))
    if usable.sum() < MIN_PIXEL_FRACTION * usable.size:
        return None
    return float(np.median(sensor_depth[usable] / model[usable]))


class DepthScale(ScaleSource):
    def add(self, result: FrameResult, reference: ScaleReference) -> None:
        if reference.depth is None or reference.input_hw is None:
            return
        stride = max(1, math.ceil(math.sqrt(result.depth.size / MAX_PIXELS)))
        sensor = sensor_depth_at_model_pixels(reference.depth, reference.input_hw, result.depth.shape,
                                              result.intrinsics, result.intrinsics_input, stride)
        ratio = depth_ratio(result.depth[::stride, ::stride], result.depth_conf[::stride, ::stride], sensor,
                            self.options)
        if ratio is not None:
            self.samples.add(ratio)
