"""Keyframe selection: fixed interval and camera-induced flow (oracle on the synthetic scene)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_stream_support import oracle_session, push_all, render

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.model.network import StepOutput
from gct_stream_ros.stream.config import EngineConfig
from gct_stream_ros.stream.keyframes import FlowKeyframes, IntervalKeyframes, keyframe_selector
from gct_stream_ros.stream.result import FrameType
from gct_stream_ros.stream.synthetic import Segment

THRESHOLD = 4.0


def true_flow(current, keyframe) -> float:
    """Mean motion of every 8th pixel of ``current`` seen from ``keyframe``, from the true geometry."""
    v, u = np.mgrid[0:current.depth.shape[0]:8, 0:current.depth.shape[1]:8]
    pixels = np.stack([u, v, np.ones_like(u)], -1).astype(np.float64)
    camera = pixels @ np.linalg.inv(current.intrinsics).T * current.depth[v, u][..., None]
    world = camera @ current.c2w[:3, :3].T + current.c2w[:3, 3]
    seen = (world - keyframe.c2w[:3, 3]) @ keyframe.c2w[:3, :3]
    projected = seen @ keyframe.intrinsics.T
    displacement = projected[..., :2] / projected[..., 2:] - pixels[..., :2]
    return float(np.linalg.norm(displacement, axis=-1).mean())


def expected_keyframes(frames, scale_frames: int, threshold: float, max_gap: int) -> list[bool]:
    decisions, last, gap = [], frames[scale_frames - 1], 0
    for position, frame in enumerate(frames[scale_frames:]):
        gap += 1
        keyframe = position == 0 or true_flow(frame, last) > threshold or gap >= max_gap
        decisions.append(keyframe)
        if keyframe:
            last, gap = frame, 0
    return decisions


def test_flow_keyframes_follow_the_camera_motion():
    segments = [Segment.still(7), Segment.rotate(9, 1.5), Segment.fast(4), Segment.still(4)]
    frames = render(24, segments)
    session, oracle = oracle_session(frames, keyframe_mode="flow", flow_threshold=THRESHOLD,
                                     max_keyframe_gap=30)
    results = [r for rs in push_all(session, frames) for r in rs]
    keyframe = [r.frame_type == FrameType.KEYFRAME for r in results[2:]]
    assert keyframe == expected_keyframes(frames, 2, THRESHOLD, 30)
    still, rotation, fast, still_again = keyframe[1:5], keyframe[5:14], keyframe[14:18], keyframe[19:]
    assert keyframe[0] and not any(still) and not any(still_again)
    assert all(fast)
    assert 2 <= sum(rotation) <= 5, "a slow pan stores a keyframe every few frames"
    assert results[0].flow is None and all(r.flow is not None for r in results[2:])
    # Every streaming frame was deferred, then committed exactly when it became a keyframe.
    decisions = [call[0] for call in oracle.calls if call[0] in ("commit", "rollback")]
    assert oracle.modes() == ["defer"] * 22
    assert decisions == ["commit" if k else "rollback" for k in keyframe]
    assert oracle.frames_stored == 2 + sum(keyframe)


def test_flow_values_are_measured_against_the_last_keyframe():
    frames = render(8, [Segment.still(2), Segment.rotate(6, 1.5)])
    session, _ = oracle_session(frames, keyframe_mode="flow", flow_threshold=THRESHOLD)
    results = [r for rs in push_all(session, frames) for r in rs]
    last = frames[1]
    for result, frame in zip(results[2:], frames[2:]):
        assert result.flow == pytest.approx(true_flow(frame, last), rel=1e-3, abs=1e-3)
        if result.keyframe:
            last = frame


def test_a_still_camera_gets_a_keyframe_every_max_gap_frames():
    frames = render(14, [Segment.still(14)])
    session, _ = oracle_session(frames, keyframe_mode="flow", flow_threshold=THRESHOLD, max_keyframe_gap=4)
    results = [r for rs in push_all(session, frames) for r in rs]
    assert [i for i, r in enumerate(results) if r.frame_type == FrameType.KEYFRAME] == [2, 6, 10]


def test_interval_selector_restarts_with_each_sequence():
    selector = IntervalKeyframes(2)
    output = StepOutput(pose_enc=torch.zeros(1, 9), depth=torch.ones(1, 2, 2), depth_conf=torch.ones(1, 2, 2))
    selector.begin(torch.zeros(2, 9))
    modes = []
    for _ in range(3):
        modes.append(selector.step_mode())
        assert selector.may_store_next() == (modes[-1] == StepMode.STORE)
        assert selector.conclude(output).keyframe == (modes[-1] == StepMode.STORE)
    selector.begin(torch.zeros(2, 9))
    assert modes == [StepMode.STORE, StepMode.SKIP, StepMode.STORE] and selector.step_mode() == StepMode.STORE


def test_flow_selector_needs_a_scale_phase_and_always_defers():
    selector = FlowKeyframes(1.0, 3)
    output = StepOutput(pose_enc=torch.zeros(1, 9), depth=torch.ones(1, 2, 2), depth_conf=torch.ones(1, 2, 2))
    with pytest.raises(RuntimeError, match="begin"):
        selector.conclude(output)
    assert selector.step_mode() == StepMode.DEFER and selector.may_store_next()


@pytest.mark.parametrize(("mode", "interval", "kind", "expected_interval"), [
    ("every", 5, IntervalKeyframes, 1), ("interval", 5, IntervalKeyframes, 5),
    ("flow", 5, FlowKeyframes, None)])
def test_selector_follows_the_config(mode, interval, kind, expected_interval):
    selector = keyframe_selector(EngineConfig(preset="tiny", keyframe_mode=mode, keyframe_interval=interval))
    assert isinstance(selector, kind)
    if expected_interval is not None:
        assert selector.interval == expected_interval
