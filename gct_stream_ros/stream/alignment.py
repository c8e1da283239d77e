"""Similarity (Sim(3)) alignment of a window onto the previous one, and warping by it.

Every window of the windowed mode has its own world frame and scale. The frames a window
re-processes from the end of the previous one (the overlap) are seen by both, which fixes
the similarity ``x -> s·R·x + t`` from the new window into the previous one (itself already
in window 0's frame), as the reference does:

* anchor: the last overlap frame that is a keyframe in both windows (the first overlap frame
  if there is none); ``R = R_prev · R_curr^T`` and ``t = c_prev - s·R·c_curr`` from its two
  camera-to-world rotations and centres;
* scale: the lower median, over every pixel of every paired frame (the anchor alone without
  pairs), of ``depth_prev / depth_curr`` where both are finite and ``|depth_curr| > eps``;
  1 without such pixels; clamped to [1e-3, 1e3]. No confidence weighting.

Warping maps the pose (rotation ``R·R_i``, centre ``s·R·c_i + t``; the quaternion is rebuilt
from the rotation matrix: unit length, ``qw >= 0``; the field of view is unchanged), scales the
depth by ``s`` and maps world points by ``s·R·p + t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gct_stream_ros.model.pose_encoding import matrix_to_quaternion, quaternion_to_matrix

SCALE_RANGE = (1e-3, 1e3)


@dataclass(frozen=True)
class Sim3:
    """``x -> scale · rotation · x + translation`` (float64)."""

    scale: float
    rotation: np.ndarray  # [3, 3]
    translation: np.ndarray  # [3]

    @classmethod
    def identity(cls) -> Sim3:
        return cls(1.0, np.eye(3), np.zeros(3))

    def rigid_matrix(self) -> np.ndarray:
        """[4, 4] ``[R | t]`` without the scale (the reference's ``chunk_transforms`` entry)."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.rotation
        matrix[:3, 3] = self.translation
        return matrix

    def apply_to_pose_enc(self, pose_enc: torch.Tensor) -> torch.Tensor:
        """Warp ``[..., 9]`` encodings (same dtype/device out); quaternions come out unit, qw >= 0."""
        encoding = pose_enc.double().cpu()
        rotation = torch.from_numpy(self.rotation)
        warped = encoding.clone()
        warped[..., :3] = self.scale * (encoding[..., :3] @ rotation.T) + torch.from_numpy(self.translation)
        warped[..., 3:7] = matrix_to_quaternion(rotation @ quaternion_to_matrix(encoding[..., 3:7]))
        return warped.to(dtype=pose_enc.dtype, device=pose_enc.device)

    def apply_to_points(self, points: torch.Tensor) -> torch.Tensor:
        """Map ``[..., 3]`` world points (same dtype/device out)."""
        rotation = torch.from_numpy(self.rotation).to(points.device, torch.float64)
        translation = torch.from_numpy(self.translation).to(points.device, torch.float64)
        return (self.scale * (points.double() @ rotation.T) + translation).to(points.dtype)


@dataclass
class OverlapEstimates:
    """One window's estimates of the overlap frames, oldest first (n frames)."""

    pose_enc: torch.Tensor  # [n, 9]
    depth: torch.Tensor  # [n, H, W]
    keyframe: torch.Tensor  # [n] bool


def estimate_sim3(previous: OverlapEstimates, current: OverlapEstimates) -> Sim3:
    """The similarity taking ``current`` (a new window's frame) onto ``previous`` (see module doc)."""
    count = min(len(previous.pose_enc), len(current.pose_enc))
    if count == 0:
        return Sim3.identity()
    paired = torch.nonzero(previous.keyframe[:count].cpu() & current.keyframe[:count].cpu()).flatten()
    if len(paired) == 0:
        paired = torch.zeros(1, dtype=torch.long)
    anchor = int(paired[-1])
    scale = _median_depth_ratio(previous.depth[paired], current.depth[paired])

    anchor_previous = previous.pose_enc[anchor].double().cpu()
    anchor_current = current.pose_enc[anchor].double().cpu()
    rotation_previous = quaternion_to_matrix(anchor_previous[3:7])
    rotation = (rotation_previous @ quaternion_to_matrix(anchor_current[3:7]).T).numpy()
    translation = anchor_previous[:3].numpy() - scale * rotation @ anchor_current[:3].numpy()
    return Sim3(scale, rotation, translation)


def _median_depth_ratio(depth_previous: torch.Tensor, depth_current: torch.Tensor) -> float:
    previous = depth_previous.float().cpu().flatten()
    current = depth_current.float().cpu().flatten()
    eps = torch.finfo(torch.float32).eps
    valid = torch.isfinite(previous) & torch.isfinite(current) & (current.abs() > eps)
    if not bool(valid.any()):
        return 1.0
    # torch.median returns the lower of the two middle values, as the reference uses.
    ratio = (previous[valid] / current[valid]).median()
    return float(ratio.clamp(*SCALE_RANGE))
