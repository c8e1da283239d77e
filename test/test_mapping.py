"""Fused voxel map, PLY and TUM files, quaternions."""

from __future__ import annotations

import numpy as np
import pytest

from gct_stream_ros.mapping.fused_map import FusedMap
from gct_stream_ros.mapping.ply import ply_bytes, read_ply, write_ply
from gct_stream_ros.mapping.quaternion import matrix_from_quaternion, quaternion_from_matrix
from gct_stream_ros.mapping.tum import read_tum, write_tum


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    return q if np.linalg.det(q) > 0 else -q


def test_points_in_one_voxel_fuse_to_their_mean_position_and_colour():
    fused = FusedMap(voxel_size=1.0, max_points=10)
    fused.add(np.array([[0.1, 0.1, 0.1], [0.3, 0.5, 0.9], [2.5, 0.0, 0.0]]),
              np.array([[0, 100, 200], [10, 110, 210], [7, 7, 7]], dtype=np.uint8))
    fused.add(np.array([[0.2, 0.3, 0.2]]), np.array([[20, 120, 220]], dtype=np.uint8))
    xyz, rgb = fused.points()
    assert len(fused) == 2
    first = np.argmin(xyz[:, 0])
    np.testing.assert_allclose(xyz[first], [0.2, 0.3, 0.4], atol=1e-6)
    np.testing.assert_array_equal(rgb[first], [10, 110, 210])
    assert xyz.dtype == np.float32 and rgb.dtype == np.uint8


def test_non_finite_points_are_ignored():
    fused = FusedMap(voxel_size=0.5, max_points=10)
    fused.add(np.array([[np.nan, 0, 0], [np.inf, 1, 1], [1, 1, 1]]), np.zeros((3, 3), dtype=np.uint8))
    assert len(fused) == 1


def test_full_grid_evicts_the_voxels_seen_longest_ago():
    fused = FusedMap(voxel_size=1.0, max_points=3)
    colour = np.zeros((1, 3), dtype=np.uint8)
    for x in range(3):
        fused.add(np.array([[x + 0.5, 0, 0]]), colour)
    fused.add(np.array([[0.5, 0, 0]]), colour)  # voxel 0 seen again: voxel 1 is now the oldest
    fused.add(np.array([[10.5, 0, 0]]), colour)
    xyz, _ = fused.points()
    assert sorted(xyz[:, 0].tolist()) == [0.5, 2.5, 10.5]


def test_grid_stays_bounded_on_a_long_stream_and_clears():
    fused = FusedMap(voxel_size=0.05, max_points=1000)
    rng = np.random.default_rng(0)
    for _ in range(5):
        fused.add(rng.normal(size=(2000, 3)), rng.integers(0, 255, (2000, 3), dtype=np.uint8))
    assert len(fused) == 1000
    fused.clear()
    assert len(fused) == 0 and fused.points()[0].shape == (0, 3)


def _fuse_by_hand(batches, voxel_size: float, max_points: int) -> dict[tuple, tuple]:
    """The fused map's rule written plainly: per voxel the sums and the batch last seen; when full,
    drop the voxels seen longest ago, ties in the order of their cell coordinates."""
    voxels: dict[tuple, list] = {}
    for number, (xyz, rgb) in enumerate(batches, start=1):
        for point, colour in zip(xyz, rgb):
            cell = tuple(np.floor(point / voxel_size).astype(np.int64))
            sums = voxels.setdefault(cell, [np.zeros(3), np.zeros(3), 0, 0])
            sums[0] += point
            sums[1] += colour
            sums[2] += 1
            sums[3] = number
        for cell in sorted(voxels, key=lambda c: (voxels[c][3], c))[:max(0, len(voxels) - max_points)]:
            del voxels[cell]
    return {cell: (sums[0] / sums[2], np.round(sums[1] / sums[2])) for cell, sums in voxels.items()}


@pytest.mark.parametrize("max_points", [5, 40, 1000])
def test_fusing_and_evicting_follow_the_rule_on_random_batches(max_points):
    rng = np.random.default_rng(max_points)
    batches = [(rng.normal(size=(30, 3)) * (1 + batch % 3), rng.integers(0, 255, (30, 3), dtype=np.uint8))
               for batch in range(12)]
    fused = FusedMap(voxel_size=0.5, max_points=max_points)
    for xyz, rgb in batches:
        fused.add(xyz, rgb)
    expected = _fuse_by_hand(batches, 0.5, max_points)
    xyz, rgb = fused.points()
    cells = [tuple(c) for c in np.floor(xyz.astype(np.float64) / 0.5).astype(np.int64)]
    assert sorted(cells) == sorted(expected) and len(fused) == min(max_points, len(fused))
    for cell, point, colour in zip(cells, xyz, rgb):
        np.testing.assert_allclose(point, expected[cell][0], atol=1e-5)
        np.testing.assert_array_equal(colour, expected[cell][1])


def test_invalid_grid_is_refused():
    with pytest.raises(ValueError):
        FusedMap(voxel_size=0.0, max_points=1)


def test_ply_round_trip_and_header(tmp_path):
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 255, (50, 3), dtype=np.uint8)
    path = write_ply(tmp_path / "sub" / "map.ply", xyz, rgb)
    assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\nelement vertex 50\n")
    assert len(path.read_bytes()) == len(ply_bytes(xyz, rgb)) and len(ply_bytes(xyz, rgb)) > 50 * 15
    read_xyz, read_rgb = read_ply(path)
    np.testing.assert_array_equal(read_xyz, xyz)
    np.testing.assert_array_equal(read_rgb, rgb)
    assert [p.name for p in path.parent.iterdir()] == ["map.ply"]  # no temporary file left behind


def test_ply_rejects_mismatched_arrays():
    with pytest.raises(ValueError):
        ply_bytes(np.zeros((3, 3)), np.zeros((2, 3)))


@pytest.mark.parametrize("seed", range(5))
def test_quaternion_round_trip_is_unit_and_canonical(seed):
    rotation = _rotation(seed)
    q = quaternion_from_matrix(rotation)
    assert np.isclose(np.linalg.norm(q), 1.0) and q[3] >= 0
    np.testing.assert_allclose(matrix_from_quaternion(q), rotation, atol=1e-12)


def test_quaternion_of_known_rotations():
    np.testing.assert_allclose(quaternion_from_matrix(np.eye(3)), [0, 0, 0, 1])
    half_turn_about_x = np.diag([1.0, -1.0, -1.0])
    np.testing.assert_allclose(quaternion_from_matrix(half_turn_about_x), [1, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(quaternion_from_matrix(1.001 * np.eye(3))), 1.0)


def test_tum_round_trip(tmp_path):
    stamps = [0, 1_500_000_001, 20_000_000_000]
    poses = []
    for seed in range(3):
        pose = np.eye(4)
        pose[:3, :3] = _rotation(seed)
        pose[:3, 3] = np.random.default_rng(seed).normal(size=3)
        poses.append(pose)
    path = write_tum(tmp_path / "trajectory.tum", stamps, poses)
    assert path.read_text().splitlines()[1].startswith("1.500000001 ")
    read_stamps, read_poses = read_tum(path)
    assert read_stamps == stamps
    np.testing.assert_allclose(read_poses, np.array(poses), atol=1e-7)


def test_tum_reader_skips_comments_and_rejects_short_lines(tmp_path):
    path = tmp_path / "t.tum"
    path.write_text("# stamp tx ty tz qx qy qz qw\n\n1.5 0 0 0 0 0 0 1\n")
    assert read_tum(path)[0] == [1_500_000_000]
    path.write_text("1.5 0 0 0\n")
    with pytest.raises(ValueError, match="8 fields"):
        read_tum(path)
