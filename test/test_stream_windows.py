"""Online windowed mode: window boundaries, revisions, and recovery of the true trajectory.

The oracle gives every window its own unknown similarity (scale, rotation, translation), so
the final estimates only match the truth if the engine aligns the windows correctly.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from test_stream_support import oracle_session, push_all, relative_poses, render

from gct_stream_ros.stream.alignment import Sim3
from gct_stream_ros.stream.result import FrameResult, FrameType
from gct_stream_ros.stream.synthetic import Segment

TOLERANCE = 1e-4


def reference_windows(frames: int, scale_frames: int, window_size: int, overlap: int, interval: int):
    """The reference's fixed-interval window list (its inference_windowed), written out independently."""
    span = min(scale_frames + (window_size - scale_frames) * interval, frames)
    step = max(span - overlap, 1)
    if span >= frames:
        return [(0, frames)]
    windows = []
    for start in range(0, frames, step):
        end = min(start + span, frames)
        windows.append((start, end))
        if end == frames:
            return windows
    return windows


def final_estimates(per_push: list[list[FrameResult]]) -> list[FrameResult]:
    """Apply every revision: the latest estimate of each frame, by index."""
    latest: dict[int, FrameResult] = {}
    for results in per_push:
        for result in results:
            latest[result.index] = result
    return [latest[i] for i in sorted(latest)]


def in_window_zero(sim3: Sim3, pose: np.ndarray) -> np.ndarray:
    mapped = np.eye(4)
    mapped[:3, :3] = sim3.rotation @ pose[:3, :3]
    mapped[:3, 3] = sim3.scale * sim3.rotation @ pose[:3, 3] + sim3.translation
    return mapped


def assert_matches_truth(final: list[FrameResult], frames, oracle, windows: int) -> None:
    window_zero = oracle.sequence_sim3[-windows]
    extent = window_zero.scale * np.ptp(relative_poses(frames)[:, :3, 3], axis=0).max()
    for result, frame, pose in zip(final, frames, relative_poses(frames)):
        expected = in_window_zero(window_zero, pose)
        np.testing.assert_allclose(result.pose_c2w[:3, :3], expected[:3, :3], atol=TOLERANCE)
        np.testing.assert_allclose(result.pose_c2w[:3, 3], expected[:3, 3], atol=TOLERANCE * extent)
        np.testing.assert_allclose(result.depth, frame.depth * window_zero.scale, rtol=TOLERANCE)
        camera_point = np.linalg.inv(frame.intrinsics) @ [10.0, 20.0, 1.0] * frame.depth[20, 10]
        point = window_zero.scale * expected[:3, :3] @ camera_point + expected[:3, 3]
        np.testing.assert_allclose(result.world_points[20, 10], point, rtol=TOLERANCE,
                                   atol=TOLERANCE * extent)
        quaternion = result.pose_enc[3:7]
        assert np.linalg.norm(quaternion) == pytest.approx(1.0, abs=1e-6) and quaternion[3] >= 0


def check_stream_order(per_push: list[list[FrameResult]]) -> None:
    """One first result per frame in order; revisions only for frames already handed out."""
    first, emitted = [], set()
    for results in per_push:
        for result in results:
            if result.revision:
                assert result.index in emitted
            else:
                first.append(result.index)
                emitted.add(result.index)
    assert first == list(range(len(first)))


@pytest.mark.parametrize("point_head", [False, True])
def test_windows_are_aligned_into_the_first_one(point_head):
    frames = render(14)
    session, oracle = oracle_session(frames, window_mode="online", window_size=5, window_overlap=2,
                                     oracle_window_sim3_seed=7, oracle_raw_quaternions=True,
                                     oracle_point_head=point_head)
    per_push = push_all(session, frames)
    check_stream_order(per_push)
    assert [len(r) for r in per_push] == [0, 2, 1, 1, 1, 3, 1, 1, 3, 1, 1, 3, 1, 1]
    final = final_estimates(per_push)
    assert len(final) == 14
    assert_matches_truth(final, frames, oracle, windows=4)
    assert session.stats().window == 3 and session.stats().revisions == 6


def test_window_boundaries_and_overlap_frames_follow_the_reference():
    frames = render(13)
    session, oracle = oracle_session(frames, window_mode="online", window_size=5, window_overlap=2,
                                     keyframe_mode="interval", keyframe_interval=2, oracle_window_sim3_seed=3)
    per_push = push_all(session, frames)
    check_stream_order(per_push)
    produced: dict[int, list[int]] = {}
    for result in (r for rs in per_push for r in rs):
        produced.setdefault(result.window, []).append(result.index)
    observed = [(min(indices), max(indices) + 1) for _, indices in sorted(produced.items())]
    assert observed == reference_windows(13, 2, 5, 2, 2) == [(0, 8), (6, 13)]
    final = final_estimates(per_push)
    # Stitching: overlap frames come from the later window, where they are its scale frames.
    assert [(r.window, r.frame_type) for r in final[6:8]] == [(1, FrameType.SCALE)] * 2
    assert [r.frame_type for r in final[:6]] == [FrameType.SCALE] * 2 + [FrameType.KEYFRAME,
                                                                        FrameType.NON_KEYFRAME] * 2
    assert_matches_truth(final, frames, oracle, windows=2)


def test_window_scales_and_transforms_relate_each_window_to_the_first():
    frames = render(11)
    session, oracle = oracle_session(frames, window_mode="online", window_size=5, window_overlap=2,
                                     oracle_window_sim3_seed=11)
    results = [r for rs in push_all(session, frames) for r in rs]
    by_window = {result.window: result for result in results}
    assert sorted(by_window) == [0, 1, 2] == list(range(session.stats().window + 1))
    first = oracle.sequence_sim3[-3]
    # Each window's world is anchored at its own first camera (frames 0, 3, 6 here).
    anchors = relative_poses(frames)[[0, 3, 6]]
    for window, (sim3, anchor) in enumerate(zip(oracle.sequence_sim3[-3:], anchors)):
        assert by_window[window].window_scale == pytest.approx(first.scale / sim3.scale, rel=1e-5)
        expected = first.rotation @ anchor[:3, :3] @ sim3.rotation.T
        np.testing.assert_allclose(by_window[window].window_transform[:3, :3], expected, atol=1e-5)
    for result in results:  # every result of a window carries that window's similarity
        assert result.window_scale == by_window[result.window].window_scale
        np.testing.assert_array_equal(result.window_transform, by_window[result.window].window_transform)


def test_window_bookkeeping_stays_constant_over_endless_windows():
    """The tracker keeps the current window's similarity only: nothing grows with the window count."""

    def held_entries(frame_count: int) -> tuple[int, int]:
        frames = render(frame_count)
        session, _ = oracle_session(frames, window_mode="online", window_size=5, window_overlap=2,
                                    oracle_window_sim3_seed=11)
        push_all(session, frames)
        tracker = vars(session._windows)
        held = sum(len(value) for value in tracker.values() if isinstance(value, list | tuple | deque | dict))
        return session.stats().window, held

    few, many = held_entries(11), held_entries(29)
    assert many[0] >= few[0] + 5
    assert many[1] == few[1]


def test_overlap_shorter_than_the_scale_phase_waits_for_new_frames():
    frames = render(12)
    session, oracle = oracle_session(frames, num_scale_frames=3, window_mode="online", window_size=6,
                                     window_overlap=1, oracle_window_sim3_seed=5)
    per_push = push_all(session, frames)
    check_stream_order(per_push)
    # Window 1 re-processes frame 5 and needs frames 6 and 7 for its scale phase.
    assert [len(r) for r in per_push] == [0, 0, 3, 1, 1, 1, 0, 3, 1, 1, 1, 0]
    assert [r.index for r in per_push[7] if r.revision] == [5]
    final = final_estimates(per_push + [session.flush()])
    assert len(final) == 12 and final[11].frame_type == FrameType.SCALE
    assert_matches_truth(final, frames, oracle, windows=3)


def test_flow_keyframes_inside_windows():
    segments = [Segment.still(3), Segment.rotate(10, 1.5), Segment.fast(4), Segment.still(5)]
    frames = render(22, segments)
    session, oracle = oracle_session(frames, window_mode="online", window_size=4, window_overlap=2,
                                     keyframe_mode="flow", flow_threshold=4.0, oracle_window_sim3_seed=9)
    per_push = push_all(session, frames)
    check_stream_order(per_push)
    results = [r for rs in per_push for r in rs]
    windows = max(r.window for r in results) + 1
    assert windows >= 3
    for window in range(windows - 1):
        stored = [r for r in results if r.window == window and r.keyframe]
        assert len(stored) == 4, "a flow window ends at the keyframe that fills it"
    assert_matches_truth(final_estimates(per_push), frames, oracle, windows=windows)
