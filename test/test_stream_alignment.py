"""Sim(3) between windows: anchor choice, median depth scale, warping, quaternions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracle_network import random_sim3

from gct_stream_ros.model.pose_encoding import encode_pose
from gct_stream_ros.stream.alignment import OverlapEstimates, Sim3, estimate_sim3

HW = (6, 8)


def random_pose(rng: np.random.Generator) -> torch.Tensor:
    """A [9] encoding of a random c2w pose with a 60-degree-ish field of view."""
    rotation = random_sim3(rng).rotation
    c2w = np.eye(4)
    c2w[:3, :3] = rotation
    c2w[:3, 3] = rng.normal(size=3)
    intrinsics = np.array([[7.0, 0, 4.0], [0, 7.0, 3.0], [0, 0, 1]])
    return encode_pose(torch.from_numpy(c2w), torch.from_numpy(intrinsics), HW).float()


def warp(sim3: Sim3, pose_enc: torch.Tensor) -> torch.Tensor:
    return sim3.apply_to_pose_enc(pose_enc)


def overlap(poses, depths, keyframes) -> OverlapEstimates:
    return OverlapEstimates(torch.stack(poses), torch.stack(depths), torch.tensor(keyframes))


def test_a_known_similarity_is_recovered_from_the_overlap():
    rng = np.random.default_rng(1)
    truth = random_sim3(rng)
    current = [random_pose(rng) for _ in range(3)]
    depths = [torch.rand(*HW) + 0.5 for _ in range(3)]
    previous = overlap([warp(truth, p) for p in current], [d * truth.scale for d in depths], [True] * 3)
    found = estimate_sim3(previous, overlap(current, depths, [True] * 3))
    assert found.scale == pytest.approx(truth.scale, rel=1e-5)
    np.testing.assert_allclose(found.rotation, truth.rotation, atol=1e-5)
    np.testing.assert_allclose(found.translation, truth.translation, atol=1e-4)
    np.testing.assert_allclose(found.rigid_matrix()[:3, :3], truth.rotation, atol=1e-5)


def test_the_anchor_is_the_last_frame_paired_as_keyframe_in_both_windows():
    rng = np.random.default_rng(2)
    truth = random_sim3(rng)
    current = [random_pose(rng) for _ in range(3)]
    depths = [torch.ones(*HW)] * 3
    consistent = [warp(truth, p) for p in current]
    # Frame 0 and frame 2 of the previous window disagree with the truth; frame 2 is not paired.
    previous_poses = [random_pose(rng), consistent[1], random_pose(rng)]
    previous = overlap(previous_poses, [d * truth.scale for d in depths], [True, True, False])
    found = estimate_sim3(previous, overlap(current, depths, [True] * 3))
    np.testing.assert_allclose(found.rotation, truth.rotation, atol=1e-5)
    np.testing.assert_allclose(found.translation, truth.translation, atol=1e-4)


def test_without_pairs_the_first_overlap_frame_anchors_and_alone_gives_the_scale():
    rng = np.random.default_rng(3)
    current = [random_pose(rng) for _ in range(2)]
    depths = [torch.full(HW, 3.0), torch.full(HW, 50.0)]
    previous = overlap([current[0], random_pose(rng)], depths, [False, False])
    found = estimate_sim3(previous, overlap(current, [torch.ones(*HW)] * 2, [True, True]))
    assert found.scale == pytest.approx(3.0)
    np.testing.assert_allclose(found.rotation, np.eye(3), atol=1e-6)


def test_scale_is_the_lower_median_of_valid_ratios_and_is_clamped():
    pose = random_pose(np.random.default_rng(4))
    current_depth = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    previous_depth = torch.tensor([[1.0, 2.0], [3.0, 4.0]])

    def scale(previous: torch.Tensor, current: torch.Tensor) -> float:
        return estimate_sim3(overlap([pose], [previous], [True]), overlap([pose], [current], [True])).scale

    assert scale(previous_depth, current_depth) == 2.0
    # Only the pixels with a usable current depth count: ratios 3 and 4.
    assert scale(previous_depth, torch.tensor([[0.0, float("nan")], [1.0, 1.0]])) == 3.0
    assert scale(previous_depth * 1e6, current_depth) == 1e3
    assert scale(previous_depth, torch.zeros(2, 2)) == 1.0


def test_warping_maps_centres_and_rotations_and_keeps_the_field_of_view():
    quarter_turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    sim3 = Sim3(2.0, quarter_turn, np.array([1.0, 2.0, 3.0]))
    raw = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -2.0, 0.7, 0.9])  # identity rotation, raw quaternion
    warped = sim3.apply_to_pose_enc(raw)
    torch.testing.assert_close(warped[:3], torch.tensor([1.0, 4.0, 3.0]))
    half = math.sqrt(0.5)
    torch.testing.assert_close(warped[3:7], torch.tensor([0.0, 0.0, half, half]))
    torch.testing.assert_close(warped[7:], raw[7:])
    points = torch.tensor([[[1.0, 0.0, 0.0]]])
    torch.testing.assert_close(sim3.apply_to_points(points), torch.tensor([[[1.0, 4.0, 3.0]]]))
    assert Sim3.identity().rigid_matrix().tolist() == np.eye(4).tolist()
