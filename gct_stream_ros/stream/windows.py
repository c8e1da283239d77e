"""Online windowed mode: when a window is full, what the next one re-processes, and alignment.

A window holds ``window_size`` stored frames (its scale frames included). It is full once it
holds them all and the next frame would have to be stored too (with interval keyframes the
non-keyframes after the last keyframe still belong to it; with flow keyframes the window ends
at the keyframe that fills it). The next window (the caller resets the network) starts by
re-processing the last ``overlap`` frames of the full one, its first frames, which become
revisions of estimates already handed out. Once the new window has estimated all of them,
``estimate_sim3`` relates it to the previous window (already in window 0's frame) and every
estimate of the new window is warped into window 0's frame from then on.

Deviation from the reference (flow windows only): the reference starts the next flow window
at ``max(end - overlap, start + scale frames)``, which for windows shorter than
``scale frames + overlap`` re-processes fewer frames than it pairs (and drops a frame from its
stitched output); here a window always re-processes exactly its predecessor's last
``overlap`` frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import numpy as np
import torch

from gct_stream_ros.stream.alignment import OverlapEstimates, Sim3, estimate_sim3
from gct_stream_ros.stream.estimate import FrameEstimate
from gct_stream_ros.stream.input_frame import InputFrame

Placed = tuple[InputFrame, FrameEstimate]


class WindowTracker:
    """The window bookkeeping of one sequence; with ``enabled=False`` it passes estimates through."""

    def __init__(self, enabled: bool, window_size: int, overlap: int) -> None:
        self.enabled = enabled
        self.window_size = window_size
        self.overlap = overlap
        self.index = 0
        self.stored = 0
        """Frames stored by the network in the current window (scale frames included)."""
        self.scale = 1.0
        """Scale of the current window's similarity into window 0 (the reference's ``chunk_scales``
        entry; only the current one is kept, so an endless stream of windows holds constant memory)."""
        self.transform = np.eye(4)
        """[4, 4] rigid part of the current window's similarity (the reference's ``chunk_transforms``)."""
        self._sim3: Sim3 | None = Sim3.identity()
        self._recent: deque[Placed] = deque(maxlen=overlap)
        self._previous_overlap: list[Placed] = []
        self._awaiting: list[Placed] = []

    def is_full(self, may_store_next: bool) -> bool:
        return self.enabled and self.stored >= self.window_size and may_store_next

    def start_next(self) -> list[InputFrame]:
        """Open the next window; return the frames it must process first (as revisions)."""
        self._previous_overlap = list(self._recent)
        self._recent.clear()
        self._awaiting = []
        self.index += 1
        self.stored = 0
        self._sim3 = None
        return [replace(frame, revision=True) for frame, _ in self._previous_overlap]

    def place(self, frames: list[InputFrame], estimates: list[FrameEstimate]) -> list[Placed]:
        """Bring fresh estimates into window 0's frame; those not placeable yet are held back.

        Estimates of a new window are held until it has re-estimated every overlap frame (the
        alignment needs all of them); they are then returned together, in order.
        """
        fresh = list(zip(frames, estimates, strict=True))
        if not self.enabled:
            return fresh
        if self._sim3 is None:
            self._awaiting.extend(fresh)
            if len(self._awaiting) < len(self._previous_overlap):
                return []
            self._sim3 = self._align()
            fresh, self._awaiting = self._awaiting, []
        placed = [(frame, estimate.warped(self._sim3)) for frame, estimate in fresh]
        self._recent.extend(placed)
        return placed

    def _align(self) -> Sim3:
        count = len(self._previous_overlap)
        sim3 = estimate_sim3(_overlap_estimates(self._previous_overlap),
                             _overlap_estimates(self._awaiting[:count]))
        self.scale = sim3.scale
        self.transform = sim3.rigid_matrix()
        return sim3


def _overlap_estimates(placed: list[Placed]) -> OverlapEstimates:
    estimates = [estimate for _, estimate in placed]
    return OverlapEstimates(pose_enc=torch.stack([e.pose_enc for e in estimates]),
                            depth=torch.stack([e.depth for e in estimates]),
                            keyframe=torch.tensor([e.keyframe for e in estimates], dtype=torch.bool))
