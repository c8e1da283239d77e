"""Each metric source recovers the scale of an off-scale network (0.37 m per model unit) in the room.

The engine runs on the oracle network; the sensors are noisy (``scale_scene.py``). Each test
states after how many frames the estimate must be within 2 % of the truth, and that turning in
place and standing still leave it there.
"""

from __future__ import annotations

import numpy as np
import pytest
from scale_scene import (
    CAMERA_HEIGHT,
    METRIC_SCALE,
    drive,
    imperfect_floor,
    noisy_odometry,
    oracle_for,
    render,
    run_session,
    sensor_depth,
    turn_and_stand,
)

from gct_stream_ros.stream.scale.options import ScaleOptions
from gct_stream_ros.stream.scale.reference import ScaleReference
from gct_stream_ros.stream.scale.tracker import MetricScale

TOLERANCE = 0.02


@pytest.fixture(scope="module")
def driven():
    frames = render(drive())
    return frames, run_session(frames)


def _track(options: ScaleOptions, results, references) -> list:
    """The state applied to each frame's first result, in frame order."""
    tracker = MetricScale(options)
    states = [tracker.update(result, None if result.revision else references[result.index])
              for result in results]
    return [state for state, result in zip(states, results) if not result.revision]


def _odometry_references(poses) -> list[ScaleReference]:
    return [ScaleReference(camera_pose=pose) for pose in poses]


def _relative_errors(states) -> np.ndarray:
    return np.array([abs(s.scale / METRIC_SCALE - 1) if s.metric else np.inf for s in states])


def test_odometry_recovers_the_scale_through_noise_slip_turns_and_standstill(driven):
    frames, results = driven
    odometry = noisy_odometry(frames, np.random.default_rng(0))
    states = _track(ScaleOptions(source="odometry"), results, _odometry_references(odometry))
    errors = _relative_errors(states)
    # 5 increments of >= 10 cm (2 to 3 frames of 5 cm each): the first estimate after 0.7 m.
    first = next(i for i, state in enumerate(states) if state.metric)
    assert first == 14
    assert (errors[first:] < TOLERANCE).all(), errors
    assert states[29].samples == states[55].samples  # the turn in place and the standstill add nothing
    assert 0 < states[-1].relative_uncertainty < TOLERANCE


def test_odometry_gives_no_estimate_from_turning_in_place_and_standing_still():
    frames = render(turn_and_stand())
    results = run_session(frames)
    odometry = noisy_odometry(frames, np.random.default_rng(1))
    states = _track(ScaleOptions(source="odometry"), results, _odometry_references(odometry))
    assert not any(s.metric for s in states)


def test_depth_recovers_the_scale_from_a_noisy_sensor_with_missing_pixels(driven):
    frames, results = driven
    rng = np.random.default_rng(2)
    references = [ScaleReference(depth=sensor_depth(f, rng), input_hw=f.image.shape[:2]) for f in frames]
    errors = _relative_errors(_track(ScaleOptions(source="depth"), results, references))
    assert errors[3] == np.inf and (errors[4:] < TOLERANCE).all(), errors  # 5 frames: min_samples


def test_camera_height_recovers_the_scale_on_an_imperfect_floor():
    frames = render(drive())
    rng = np.random.default_rng(3)
    results = run_session(frames, [imperfect_floor(f, rng) for f in frames])
    options = ScaleOptions(source="camera_height", camera_height=CAMERA_HEIGHT)
    errors = _relative_errors(_track(options, results, [None] * len(frames)))
    assert errors[3] == np.inf and (errors[4:] < TOLERANCE).all(), errors



def test_odometry_keeps_the_scale_across_windows_of_unknown_scales():
    """Each window of the oracle has its own random similarity; the engine aligns them into the first one's
    frame, and each window's own estimate takes over from the previous one's."""
    frames = render(drive())
    oracle = oracle_for(frames, window_sim3_seed=4)
    results = run_session(frames, oracle=oracle, window_mode="online", window_size=16, window_overlap=4)
    assert max(r.window for r in results) >= 3
    truth = METRIC_SCALE / oracle.sequence_sim3[1].scale  # the first window's (0: before the first reset)
    odometry = noisy_odometry(frames, np.random.default_rng(7))
    states = _track(ScaleOptions(source="odometry"), results, _odometry_references(odometry))
    errors = np.array([abs(s.scale / truth - 1) if s.metric else np.inf for s in states])
    first = next(i for i, state in enumerate(states) if state.metric)
    assert (errors[first:] < TOLERANCE).all(), errors
