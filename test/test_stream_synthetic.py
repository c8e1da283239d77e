"""The synthetic scene: deterministic, geometrically exact, trajectories made of segments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gct_stream_ros.stream.synthetic import Segment, SyntheticScene, trajectory_poses


def test_render_is_deterministic_per_seed_and_differs_across_seeds():
    first = SyntheticScene(3).render_sequence(2, 40, 30)
    again = SyntheticScene(3).render_sequence(2, 40, 30)
    other = SyntheticScene(4).render_sequence(2, 40, 30)
    for a, b in zip(first, again):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.depth, b.depth)
    assert not np.array_equal(first[0].image, other[0].image)


def test_frames_have_the_requested_layout_and_stamps():
    frames = SyntheticScene(0).render_sequence(3, 48, 36, fps=10.0)
    frame = frames[2]
    assert frame.image.shape == (36, 48, 3) and frame.image.dtype == np.uint8
    assert frame.depth.shape == (36, 48) and frame.depth.dtype == np.float32
    assert [f.stamp_ns for f in frames] == [0, 100_000_000, 200_000_000]
    np.testing.assert_allclose(frame.intrinsics[:2, 2], [24.0, 18.0])
    assert np.all(frame.depth > 0.1) and np.all(np.isfinite(frame.depth))
    assert frame.image.std() > 10.0, "textures must give the image detail"


def test_depth_and_poses_are_consistent_across_views():
    """A surface point seen in one view reprojects onto a surface of the same depth in another."""
    scene = SyntheticScene(1)
    frames = scene.render_sequence(2, 64, 48, trajectory=[Segment.translate(2, 0.2, (1.0, 0.0, 0.3))])
    source, target = frames
    v, u = np.mgrid[8:40:4, 8:56:4]
    d = source.depth[v, u].astype(np.float64)
    k_inv = np.linalg.inv(source.intrinsics)
    cam = (np.stack([u, v, np.ones_like(u)], -1) @ k_inv.T) * d[..., None]
    world = cam @ source.c2w[:3, :3].T + source.c2w[:3, 3]
    in_target = (world - target.c2w[:3, 3]) @ target.c2w[:3, :3]
    pixel = in_target @ target.intrinsics.T
    pu, pv = pixel[..., 0] / pixel[..., 2], pixel[..., 1] / pixel[..., 2]
    ru, rv = np.round(pu).astype(int), np.round(pv).astype(int)
    # Only points landing exactly on a pixel centre of the target can be compared exactly: re-render them.
    inside = (ru >= 0) & (ru < 64) & (rv >= 0) & (rv < 48)
    assert inside.mean() > 0.8
    close = inside & (np.abs(pu - ru) < 0.05) & (np.abs(pv - rv) < 0.05)
    target_depth = target.depth[rv[close], ru[close]]
    np.testing.assert_allclose(target_depth, in_target[..., 2][close], rtol=2e-3)
    # Coarser check on every point: the target depth at the nearest pixel is close to the predicted z.
    ratio = target.depth[rv[inside], ru[inside]] / in_target[..., 2][inside]
    assert np.median(np.abs(ratio - 1.0)) < 0.02


def test_segments_give_still_rotation_and_translation_motion():
    poses = trajectory_poses(9, [Segment.still(3), Segment.rotate(3, 2.0), Segment.translate(3, 0.05)])
    np.testing.assert_array_equal(poses[0], poses[2])
    relative = np.linalg.inv(poses[2]) @ poses[4]
    np.testing.assert_allclose(relative[:3, 3], 0.0, atol=1e-12)
    angle = math.degrees(math.acos((np.trace(relative[:3, :3]) - 1.0) / 2.0))
    assert angle == pytest.approx(4.0)
    step = np.linalg.inv(poses[7]) @ poses[8]
    np.testing.assert_allclose(step[:3, 3], [0.05, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(step[:3, :3], np.eye(3), atol=1e-12)


def test_walkthrough_covers_any_length_and_segments_must_cover_the_request():
    assert trajectory_poses(500, "walkthrough").shape == (500, 4, 4)
    with pytest.raises(ValueError, match="cover 2 frames"):
        trajectory_poses(3, [Segment.still(2)])
    with pytest.raises(ValueError, match="unknown trajectory"):
        trajectory_poses(3, "spiral")


def test_walkthrough_stays_inside_the_room_and_out_of_the_boxes():
    scene = SyntheticScene(0)
    for pose in trajectory_poses(400, None)[::7]:
        centre = pose[:3, 3]
        for low, high in scene.boxes:
            assert not np.all((centre > low - 0.2) & (centre < high + 0.2))
    frames = scene.render_sequence(400, 16, 12)[::50]
    assert min(float(f.depth.min()) for f in frames) > 0.3
