"""One frame's estimate taken out of a network step, on the CPU, and its Sim(3) warp."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from gct_stream_ros.model.network import StepOutput
from gct_stream_ros.stream.alignment import Sim3
from gct_stream_ros.stream.result import FrameType


@dataclass(frozen=True)
class FrameEstimate:
    pose_enc: torch.Tensor  # [9]
    depth: torch.Tensor  # [H, W]
    depth_conf: torch.Tensor  # [H, W]
    frame_type: FrameType
    world_points: torch.Tensor | None = None  # [H, W, 3], point head only
    world_points_conf: torch.Tensor | None = None  # [H, W]
    flow: float | None = None
    step_ms: float = 0.0

    @classmethod
    def from_step(cls, output: StepOutput, position: int, frame_type: FrameType,
                  flow: float | None = None) -> FrameEstimate:
        """Frame ``position`` of a step's output, fp32 on the CPU."""

        def take(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor[position].detach().float().cpu()

        return cls(pose_enc=take(output.pose_enc), depth=take(output.depth),
                   depth_conf=take(output.depth_conf), frame_type=frame_type,
                   world_points=take(output.world_points), world_points_conf=take(output.world_points_conf),
                   flow=flow)

    @property
    def keyframe(self) -> bool:
        return self.frame_type != FrameType.NON_KEYFRAME

    def warped(self, sim3: Sim3) -> FrameEstimate:
        """The estimate in the frame ``sim3`` maps into (pose, depth scale and points; conf unchanged)."""
        points = None if self.world_points is None else sim3.apply_to_points(self.world_points)
        return replace(self, pose_enc=sim3.apply_to_pose_enc(self.pose_enc), depth=self.depth * sim3.scale,
                       world_points=points)
