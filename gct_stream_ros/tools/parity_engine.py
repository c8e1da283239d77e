"""Parity runners that drive the reference's keyframe/window loops through our ``StreamSession``.

The flow-keyframe and windowed scenarios of a golden fixture are the reference's inference
loops, not single network steps: they are reproduced by feeding the fixture's frames to the
engine (``push_tensor``), applying every revision (the latest estimate of each frame wins,
which is the reference's stitching), and laying the results out like the fixture. Every
setting comes from the scenario's call kwargs, resolved as the reference resolves them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gct_stream_ros.model.gct import GCTModel
from gct_stream_ros.stream.config import EngineConfig
from gct_stream_ros.stream.result import FrameResult, FrameType
from gct_stream_ros.stream.session import StreamSession

# The reference API's defaults.
DEFAULT_MAX_NON_KEYFRAME_GAP = 30
DEFAULT_WINDOW_SIZE = 16


def scale_frames(model: GCTModel, images: torch.Tensor, kwargs: dict[str, Any]) -> int:
    return min(kwargs.get("num_scale_frames") or model.config.scale_frames, len(images))


def keyframe_settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Flow mode when ``flow_threshold > 0`` (it takes precedence), else the fixed interval."""
    if kwargs.get("flow_threshold", 0.0) > 0.0:
        return dict(keyframe_mode="flow", flow_threshold=kwargs["flow_threshold"],
                    max_keyframe_gap=kwargs.get("max_non_keyframe_gap", DEFAULT_MAX_NON_KEYFRAME_GAP))
    return dict(keyframe_mode="interval", keyframe_interval=max(kwargs.get("keyframe_interval", 1), 1))


def window_overlap(images: torch.Tensor, num_scale: int, kwargs: dict[str, Any]) -> int:
    """Overlap in frames: ``overlap_keyframes`` (counted in keyframes), else ``overlap_size``, else
    the scale frames; at most one frame less than the input."""
    if kwargs.get("overlap_keyframes") is not None:
        overlap = max(num_scale, kwargs["overlap_keyframes"] * max(kwargs.get("keyframe_interval", 1), 1))
    elif kwargs.get("overlap_size") is not None:
        overlap = kwargs["overlap_size"]
    else:
        overlap = num_scale
    overlap = min(overlap, len(images) - 1)
    if overlap > num_scale:
        raise NotImplementedError(f"an overlap ({overlap}) longer than the scale phase ({num_scale})")
    return overlap


def run_session(model: GCTModel, images: torch.Tensor,
                **settings: Any) -> tuple[list[FrameResult], StreamSession]:
    """Push every frame, flush, apply the revisions: the final result of each frame, in order."""
    device = str(next(model.parameters()).device)
    # The network is given, so the preset and checkpoint settings are not used.
    config = EngineConfig(preset="tiny", device=device, image_width=images.shape[-1], **settings)
    session = StreamSession(config, network=model)
    latest: dict[int, FrameResult] = {}
    for position, image in enumerate(images):
        latest.update((result.index, result) for result in session.push_tensor(image, stamp_ns=position))
    latest.update((result.index, result) for result in session.flush())
    return [latest[i] for i in range(len(images))], session


def fixture_outputs(results: list[FrameResult]) -> dict[str, torch.Tensor]:
    """Final results -> the fixture's per-frame tensors (batch 1)."""

    def stacked(name: str) -> torch.Tensor:
        return torch.stack([torch.from_numpy(getattr(result, name)) for result in results])[None]

    frame_types = torch.tensor([[int(result.frame_type) for result in results]], dtype=torch.uint8)
    outputs = {"pose_enc": stacked("pose_enc"), "depth": stacked("depth")[..., None],
               "depth_conf": stacked("depth_conf"), "frame_type": frame_types,
               "is_keyframe": (frame_types != FrameType.NON_KEYFRAME).to(torch.uint8)}
    if all(result.world_points is not None for result in results):
        outputs["world_points"] = stacked("world_points")
        outputs["world_points_conf"] = stacked("world_points_conf")
    return outputs


def run_flow_streaming(model: GCTModel, images: torch.Tensor,
                       kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``inference_streaming`` with flow keyframes: deferred steps, committed or rolled back."""
    num_scale = scale_frames(model, images, kwargs)
    results, _ = run_session(model, images, num_scale_frames=num_scale, window_overlap=num_scale,
                             **keyframe_settings(kwargs))
    outputs = fixture_outputs(results)
    flows = [float("nan") if result.flow is None else result.flow for result in results]
    outputs["flow_magnitude"] = torch.tensor([flows], dtype=torch.float32)
    return outputs


def run_windowed(model: GCTModel, images: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``inference_windowed``: windows of ``window_size`` stored frames, aligned and stitched."""
    if kwargs.get("scale_mode", "median") != "median":
        raise NotImplementedError(f"scale_mode={kwargs['scale_mode']!r}")
    num_scale = scale_frames(model, images, kwargs)
    results, _ = run_session(model, images, num_scale_frames=num_scale, window_mode="online",
                             window_size=kwargs.get("window_size", DEFAULT_WINDOW_SIZE),
                             window_overlap=window_overlap(images, num_scale, kwargs),
                             **keyframe_settings(kwargs))
    outputs = fixture_outputs(results)
    # Every window keeps frames of its own among the final results (a window outlasts its overlap).
    windows = {result.window: result for result in results}
    outputs["chunk_scales"] = torch.tensor([[windows[w].window_scale for w in sorted(windows)]],
                                           dtype=torch.float32)
    outputs["chunk_transforms"] = torch.from_numpy(
        np.stack([windows[w].window_transform for w in sorted(windows)])).float()[None]
    return outputs
