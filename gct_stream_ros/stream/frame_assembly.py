"""Turn a frame and its (aligned) estimate into the ``FrameResult`` handed to users."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from gct_stream_ros.model.pose_encoding import decode_pose_encoding
from gct_stream_ros.stream.estimate import FrameEstimate
from gct_stream_ros.stream.input_frame import InputFrame
from gct_stream_ros.stream.points import depth_to_world_points
from gct_stream_ros.stream.result import FrameResult


def publishable_pose(pose_enc: torch.Tensor, image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(c2w [4,4], K [3,3])`` float64 from a raw encoding, its quaternion normalised first."""
    encoding = pose_enc.double().clone()
    encoding[3:7] = encoding[3:7] / torch.linalg.vector_norm(encoding[3:7])
    c2w, intrinsics = decode_pose_encoding(encoding, image_hw)
    return c2w.numpy(), intrinsics.numpy()


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] -> ``[H, W, 3]`` uint8."""
    return (image.permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def assemble_frame(frame: InputFrame, estimate: FrameEstimate, *, sequence: int, window: int,
                   window_scale: float = 1.0, window_transform: np.ndarray | None = None,
                   compute_points: bool = True) -> FrameResult:
    """The result for ``frame``; world points from the point head when present, else from depth."""
    c2w, intrinsics = publishable_pose(estimate.pose_enc, frame.model_hw)
    depth = estimate.depth.numpy()
    depth_conf = estimate.depth_conf.numpy()
    world_points = world_points_conf = None
    if compute_points:
        if estimate.world_points is not None:
            world_points = estimate.world_points.numpy()
            world_points_conf = estimate.world_points_conf.numpy()
        else:
            world_points = depth_to_world_points(depth, c2w, intrinsics, np.float32)
            world_points_conf = depth_conf
    intrinsics_input = intrinsics if frame.geometry is None else np.asarray(
        frame.geometry.intrinsics_to_input(intrinsics), dtype=np.float64)
    return FrameResult(
        index=frame.index, stamp_ns=frame.stamp_ns, pose_c2w=c2w, intrinsics=intrinsics,
        intrinsics_input=intrinsics_input, depth=depth, depth_conf=depth_conf,
        image=frame.rgb if frame.rgb is not None else to_uint8_image(frame.image),
        frame_type=estimate.frame_type, window=window, sequence=sequence, revision=frame.revision,
        window_scale=window_scale, window_transform=window_transform,
        world_points=world_points, world_points_conf=world_points_conf, flow=estimate.flow,
        pose_enc=estimate.pose_enc.numpy(),
        timings_ms={"preprocess": frame.preprocess_ms, "step": estimate.step_ms})


@dataclass(frozen=True)
class DeferredResult:
    """A frame's estimate, placed in its window, whose ``FrameResult`` is not assembled yet.

    ``StreamSession.push_prepared_deferred`` returns these so that the caller may assemble them on
    another thread while the session steps the next frame (the offline tool does: docs/architecture.md,
    *Threads*). Everything ``assemble`` reads is held here and no later step changes it: the estimate's
    CPU tensors (copied from the device by ``FrameEstimate.from_step``, or a CPU network's outputs of
    that step, or made by the window warp), the frame's own image, the sequence, the window and its
    similarity as they were when the estimate was placed.
    """

    frame: InputFrame
    estimate: FrameEstimate
    sequence: int
    window: int
    window_scale: float = 1.0
    window_transform: np.ndarray | None = None
    compute_points: bool = True

    def assemble(self) -> FrameResult:
        """The ``FrameResult``; its ``timings_ms["result"]`` is the time this took."""
        start = time.perf_counter()
        result = assemble_frame(self.frame, self.estimate, sequence=self.sequence, window=self.window,
                                window_scale=self.window_scale, window_transform=self.window_transform,
                                compute_points=self.compute_points)
        result.timings_ms["result"] = (time.perf_counter() - start) * 1e3
        return result


def assemble_all(results: list[DeferredResult]) -> list[FrameResult]:
    """``assemble`` each, in order."""
    return [result.assemble() for result in results]
