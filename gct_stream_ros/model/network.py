"""The interface the streaming engine drives: one call per step, caches owned by the network.

``GCTModel`` (the real transformer) implements it, and so does the engine's oracle stand-in
used in tests; the engine depends on nothing else of the model package except preprocessing
and pose decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from gct_stream_ros.cache.base import CacheStats, StepMode


@dataclass
class StepOutput:
    """Per-frame predictions of one step, fp32, on the network's device.

    ``pose_enc`` is ``[tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]``; decoded with
    ``model.pose_encoding`` it is the camera-to-world pose (OpenCV optical axes) in the world
    frame of the current sequence (anchored at its first frame).
    """

    pose_enc: torch.Tensor  # [S, 9]
    depth: torch.Tensor  # [S, H, W], z-depth at model resolution
    depth_conf: torch.Tensor  # [S, H, W], > 1
    pose_enc_list: torch.Tensor | None = None  # [iterations, S, 9], one per camera-head refinement
    world_points: torch.Tensor | None = None  # [S, H, W, 3], point head only
    world_points_conf: torch.Tensor | None = None  # [S, H, W]


class StreamingNetwork(Protocol):
    """A network with per-sequence caches, driven one step at a time."""

    def step(self, images: torch.Tensor, mode: StepMode = StepMode.STORE,
             num_scale_frames: int | None = None) -> StepOutput:
        """Run ``images`` ``[S, 3, H, W]`` (RGB in [0, 1], model resolution) through the network.

        S > 1 is phase 1 (only right after ``reset``): the frames attend to each other and are
        stored. ``num_scale_frames`` decides which frames get the scale-frame token variant (a
        frame whose position in the sequence is below it); ``None`` uses the configured count.
        """

    def commit(self) -> None:
        """Keep the frame of the last DEFER step in every cache."""

    def rollback(self) -> None:
        """Remove the frame of the last DEFER step from every cache."""

    def reset(self) -> None:
        """Clear every cache: the next step starts a new sequence (new world frame)."""

    @property
    def frames_stored(self) -> int:
        """Frames stored in the caches since the last reset."""

    def cache_stats(self) -> CacheStats:
        """Statistics of the aggregator's KV cache."""
