"""What a metric source measured at an image's stamp (matched to it by the node or the offline tool)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScaleReference:
    camera_pose: np.ndarray | None = None
    """[4, 4] camera optical frame in the odometry frame (metres) at the image's stamp ('odometry')."""
    depth: np.ndarray | None = None
    """[h, w] metric depth (metres; NaN or 0 invalid) on the input image's pixel grid, possibly at
    another resolution ('depth')."""
    input_hw: tuple[int, int] | None = None
    """(height, width) of the input image the depth is aligned with ('depth')."""
