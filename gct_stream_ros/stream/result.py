"""What the streaming engine hands to its users (the ROS node, the offline tool) per frame."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class FrameType(enum.IntEnum):
    """Same codes as the reference's ``frame_type`` output."""

    SCALE = 0
    KEYFRAME = 1
    NON_KEYFRAME = 2


@dataclass
class FrameResult:
    """The estimate for one input frame.

    Geometry is in the session's world frame (the first frame of the first window, OpenCV
    optical axes: x right, y down, z forward). Units are the model's own (not metric);
    ``stream/scale/apply.py`` turns a result into metres once a scale source knows the factor.
    """

    index: int
    """0-based position of the frame in the input stream (since the session was created)."""
    stamp_ns: int
    """The stamp given to ``push``, untouched (nanoseconds)."""
    pose_c2w: np.ndarray
    """[4, 4] float64 camera-to-world transform."""
    intrinsics: np.ndarray
    """[3, 3] float64 pinhole matrix at model resolution (the resolution of ``depth``)."""
    intrinsics_input: np.ndarray
    """[3, 3] float64 pinhole matrix expressed for the input image's pixels."""
    depth: np.ndarray
    """[H, W] float32 z-depth at model resolution."""
    depth_conf: np.ndarray
    """[H, W] float32 confidence (> 1; higher is better)."""
    image: np.ndarray
    """[H, W, 3] uint8 RGB image the model saw (model resolution), for colouring points."""
    frame_type: FrameType
    window: int = 0
    """Index of the window that produced this estimate (0 when windowing is off)."""
    revision: bool = False
    """True when this re-estimates a frame already emitted (window overlap); never a new frame."""
    sequence: int = 0
    """Index of the sequence (world frame) of this estimate: it increments when the session is
    reset or the input size changes, and the world frame restarts then."""
    window_scale: float = 1.0
    """Scale of the similarity that brought this window into window 0's frame (1 without windows)."""
    window_transform: np.ndarray | None = None
    """[4, 4] float64 rigid part ``[R | t]`` of that similarity (``x -> s·R·x + t``); None without windows."""
    world_points: np.ndarray | None = None
    """[H, W, 3] float32 points in the world frame, when requested."""
    world_points_conf: np.ndarray | None = None
    """[H, W] float32 confidence of ``world_points``."""
    flow: float | None = None
    """Mean flow (pixels) against the last keyframe, in flow keyframe mode."""
    pose_enc: np.ndarray | None = None
    """[9] float32 raw pose encoding of the network (for parity and debugging)."""
    timings_ms: dict[str, float] = field(default_factory=dict)
    """Wall-clock timings of this frame: ``preprocess`` (its resize), ``step`` (the network step that
    produced it; a scale phase's step is shared by its frames) and ``result`` (this result's assembly)."""

    @property
    def keyframe(self) -> bool:
        """Scale frames and keyframes are stored in the cache; non-keyframes are not."""
        return self.frame_type != FrameType.NON_KEYFRAME
