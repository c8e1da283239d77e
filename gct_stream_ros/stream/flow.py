"""Mean image motion induced by the camera between a frame and the last keyframe.

The current frame's pixels (every ``stride``-th row and column) are lifted with its own
predicted depth, pose and field of view, moved into the keyframe's camera and projected with
the keyframe's field of view; the flow is the mean pixel displacement over the samples whose
depth and re-projected depth are positive. This is the keyframe criterion of the reference's
flow mode, computed the same way so that keyframe decisions match it.
"""

from __future__ import annotations

import torch

from gct_stream_ros.model.pose_encoding import decode_pose_encoding

MIN_DEPTH = 1e-6
DEFAULT_STRIDE = 8


def flow_magnitude(current_pose_enc: torch.Tensor, keyframe_pose_enc: torch.Tensor,
                   current_depth: torch.Tensor, stride: int = DEFAULT_STRIDE) -> float:
    """Mean flow in pixels (0.0 when no sample is valid).

    ``current_pose_enc`` and ``keyframe_pose_enc`` are ``[9]`` encodings in the same world
    frame; ``current_depth`` is ``[H, W]`` at the resolution both encodings refer to.
    """
    height, width = current_depth.shape
    dtype = current_depth.dtype
    c2w_current, k_current = decode_pose_encoding(current_pose_enc.to(dtype), (height, width))
    c2w_keyframe, k_keyframe = decode_pose_encoding(keyframe_pose_enc.to(dtype), (height, width))

    depth = current_depth[::stride, ::stride]  # [h, w]
    rows = torch.arange(0, height, stride, dtype=dtype, device=depth.device)
    cols = torch.arange(0, width, stride, dtype=dtype, device=depth.device)
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # [h, w, 3]

    points_camera = (pixels @ torch.linalg.inv(k_current).T) * depth[..., None]
    points_world = points_camera @ c2w_current[:3, :3].T + c2w_current[:3, 3]
    # World -> keyframe camera with the rigid inverse R^T (x - t).
    points_keyframe = (points_world - c2w_keyframe[:3, 3]) @ c2w_keyframe[:3, :3]
    z = points_keyframe[..., 2]
    projected = (points_keyframe / z.clamp(min=MIN_DEPTH)[..., None]) @ k_keyframe.T  # [h, w, 3]

    displacement = torch.linalg.vector_norm(projected[..., :2] - pixels[..., :2], dim=-1)
    valid = (depth > MIN_DEPTH) & (z > MIN_DEPTH)
    if not bool(valid.any()):
        return 0.0
    return float(displacement[valid].mean())
