"""Pose encoding <-> c2w pose and intrinsics."""

from __future__ import annotations

import math

import torch

from gct_stream_ros.model.pose_encoding import (
    decode_pose_encoding,
    encode_pose,
    matrix_to_quaternion,
    quaternion_to_matrix,
)


def _unit_quaternions(n: int) -> torch.Tensor:
    q = torch.randn(n, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return q / q.norm(dim=-1, keepdim=True)


def test_quaternion_matrix_round_trip_is_unit_with_non_negative_w():
    q = _unit_quaternions(64)
    q[0] = torch.tensor([0.0, 0.0, 1.0, 0.0])  # 180 degrees: the trace-based solution degenerates
    recovered = matrix_to_quaternion(quaternion_to_matrix(q))
    torch.testing.assert_close(recovered, torch.where(q[:, 3:] < 0, -q, q))
    assert (recovered[:, 3] >= 0).all()


def test_decoded_rotation_ignores_quaternion_scale_and_is_orthonormal():
    q = _unit_quaternions(8)
    rotation = quaternion_to_matrix(3.0 * q)
    torch.testing.assert_close(rotation, quaternion_to_matrix(q))
    identity = torch.eye(3, dtype=q.dtype).expand(8, 3, 3)
    torch.testing.assert_close(rotation @ rotation.transpose(-1, -2), identity)


def test_decode_gives_c2w_translation_and_centred_intrinsics_from_fov():
    pose_enc = torch.tensor([1.0, 2.0, 3.0, 0, 0, 0, 2.0, math.pi / 2, 2 * math.atan(0.5)])
    c2w, K = decode_pose_encoding(pose_enc, (100, 200))  # noqa: N806
    torch.testing.assert_close(c2w, torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]]))
    torch.testing.assert_close(K, torch.tensor([[200.0, 0, 100], [0, 50.0, 50], [0, 0, 1]]))


def test_encode_decode_round_trip():
    pose_enc = torch.cat((torch.randn(5, 3, dtype=torch.float64), _unit_quaternions(5),
                          torch.rand(5, 2, dtype=torch.float64) + 0.5), dim=-1)
    pose_enc[:, 3:7] = torch.where(pose_enc[:, 6:7] < 0, -pose_enc[:, 3:7], pose_enc[:, 3:7])
    c2w, K = decode_pose_encoding(pose_enc, (378, 518))  # noqa: N806
    torch.testing.assert_close(encode_pose(c2w, K, (378, 518)), pose_enc)
