"""A frame accepted by the session, held until the network has run on it, and the preprocessed image
it is made from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gct_stream_ros.model.preprocess import ImageGeometry


@dataclass(frozen=True)
class PreparedImage:
    """An input image at model resolution (``StreamSession.prepare``), not yet given to the session."""

    image: torch.Tensor
    """[3, H, W] float32 RGB in [0, 1]."""
    geometry: ImageGeometry
    rgb: np.ndarray
    """``[H, W, 3]`` uint8, the resized image ``image`` was made from."""
    preprocess_ms: float


@dataclass(frozen=True)
class InputFrame:
    index: int
    """Position in the input stream since the session was created."""
    stamp_ns: int
    image: torch.Tensor
    """[3, H, W] float32 RGB in [0, 1] at model resolution, on the CPU."""
    geometry: ImageGeometry | None = None
    """How the input image was mapped onto ``image`` (for the intrinsics of the input); None:
    the input already was at model resolution."""
    rgb: np.ndarray | None = None
    """``[H, W, 3]`` uint8, the resized image ``image`` was made from (None: pushed as a tensor); the
    result's colours, without a round trip through float."""
    revision: bool = False
    """Re-processed by a later window (its first result was already handed out)."""
    preprocess_ms: float = 0.0

    @property
    def model_hw(self) -> tuple[int, int]:
        return int(self.image.shape[-2]), int(self.image.shape[-1])
