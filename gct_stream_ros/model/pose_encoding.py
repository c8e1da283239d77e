"""The 9-number pose encoding of the camera head <-> camera-to-world pose and intrinsics.

``pose_enc = [tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]``. Convention (the reference's): ``[R | t]``
is **camera-to-world** (c2w) with OpenCV camera axes (x right, y down, z forward); ``t`` is the
camera centre in the world frame; the quaternion is scalar-last and need not be unit length
(the network's raw output is not). Intrinsics are at the model image resolution ``(H, W)``:
``fy = (H/2) / tan(fov_h/2)``, ``fx = (W/2) / tan(fov_w/2)``, principal point at the centre.
"""

from __future__ import annotations

import torch


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """Rotation of ``q / |q|`` (scalar-last) ``[..., 4] -> [..., 3, 3]``."""
    x, y, z, w = quaternion.unbind(-1)
    two_s = 2.0 / (quaternion * quaternion).sum(-1)
    matrix = torch.stack((
        1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w),
        two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w),
        two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y),
    ), dim=-1)
    return matrix.unflatten(-1, (3, 3))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Unit quaternion (scalar-last, ``qw >= 0``) of a rotation ``[..., 3, 3] -> [..., 4]``."""
    m = matrix
    trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # four algebraically equal solutions; each is well conditioned where its leading term is large
    candidates = torch.stack((
        torch.stack((m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1],
                     1 + trace), dim=-1),
        torch.stack((1 + 2 * m[..., 0, 0] - trace, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0],
                     m[..., 2, 1] - m[..., 1, 2]), dim=-1),
        torch.stack((m[..., 0, 1] + m[..., 1, 0], 1 + 2 * m[..., 1, 1] - trace, m[..., 1, 2] + m[..., 2, 1],
                     m[..., 0, 2] - m[..., 2, 0]), dim=-1),
        torch.stack((m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 + 2 * m[..., 2, 2] - trace,
                     m[..., 1, 0] - m[..., 0, 1]), dim=-1),
    ), dim=-2)  # [..., 4, 4]
    leading = torch.stack((1 + trace, 1 + 2 * m[..., 0, 0] - trace, 1 + 2 * m[..., 1, 1] - trace,
                           1 + 2 * m[..., 2, 2] - trace), dim=-1)
    best = leading.argmax(-1, keepdim=True)[..., None].expand(*leading.shape[:-1], 1, 4)
    quaternion = candidates.gather(-2, best).squeeze(-2)
    quaternion = quaternion / quaternion.norm(dim=-1, keepdim=True)
    return torch.where(quaternion[..., 3:] < 0, -quaternion, quaternion)


def decode_pose_encoding(pose_enc: torch.Tensor,
                         image_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., 9]`` -> c2w ``[..., 4, 4]`` and intrinsics ``K`` ``[..., 3, 3]`` for an ``(H, W)`` image."""
    height, width = image_hw
    c2w = torch.zeros(*pose_enc.shape[:-1], 4, 4, dtype=pose_enc.dtype, device=pose_enc.device)
    c2w[..., :3, :3] = quaternion_to_matrix(pose_enc[..., 3:7])
    c2w[..., :3, 3] = pose_enc[..., :3]
    c2w[..., 3, 3] = 1
    intrinsics = torch.zeros(*pose_enc.shape[:-1], 3, 3, dtype=pose_enc.dtype, device=pose_enc.device)
    intrinsics[..., 0, 0] = (width / 2) / torch.tan(pose_enc[..., 8] / 2)
    intrinsics[..., 1, 1] = (height / 2) / torch.tan(pose_enc[..., 7] / 2)
    intrinsics[..., 0, 2] = width / 2
    intrinsics[..., 1, 2] = height / 2
    intrinsics[..., 2, 2] = 1
    return c2w, intrinsics


def encode_pose(c2w: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """c2w ``[..., 4, 4]`` (or ``[..., 3, 4]``) and ``K`` ``[..., 3, 3]`` -> ``[..., 9]``.

    The quaternion is unit length with ``qw >= 0``; the FoVs follow from the focal lengths.
    """
    height, width = image_hw
    fov_h = 2 * torch.atan((height / 2) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((width / 2) / intrinsics[..., 0, 0])
    quaternion = matrix_to_quaternion(c2w[..., :3, :3])
    return torch.cat((c2w[..., :3, 3], quaternion, fov_h[..., None], fov_w[..., None]), dim=-1)
