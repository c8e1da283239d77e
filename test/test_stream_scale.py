"""The metric-scale pieces on their own: robust ratio, stamp matching, depth sampling, options, the tracker's
sequence and window rules, the odometry's turn gate, and scaling a result."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gct_stream_ros.model.preprocess import model_size
from gct_stream_ros.stream.result import FrameResult, FrameType
from gct_stream_ros.stream.scale.apply import scale_result
from gct_stream_ros.stream.scale.depth import sensor_depth_at_model_pixels
from gct_stream_ros.stream.scale.odometry import OdometryScale
from gct_stream_ros.stream.scale.options import ScaleOptions, ScaleOptionsError
from gct_stream_ros.stream.scale.ratio_window import RatioWindow
from gct_stream_ros.stream.scale.reference import ScaleReference
from gct_stream_ros.stream.scale.stamped import PoseBuffer, StampedBuffer
from gct_stream_ros.stream.scale.state import UNSCALED
from gct_stream_ros.stream.scale.tracker import MetricScale
from gct_stream_ros.stream.synthetic import rotation_matrix


def _result(index: int, position=(0.0, 0.0, 0.0), yaw_deg: float = 0.0, sequence: int = 0, window: int = 0,
            revision: bool = False) -> FrameResult:
    pose = np.eye(4)
    pose[:3, :3] = rotation_matrix(0.0, yaw_deg, 0.0)
    pose[:3, 3] = position
    depth = np.full((6, 8), 2.0, dtype=np.float32)
    points = np.ones((6, 8, 3), dtype=np.float32)
    intrinsics = np.array([[8.0, 0, 4], [0, 8.0, 3], [0, 0, 1]])
    return FrameResult(index=index, stamp_ns=index, pose_c2w=pose, intrinsics=intrinsics,
                       intrinsics_input=intrinsics, depth=depth, depth_conf=np.full((6, 8), 2.0, np.float32),
                       image=np.zeros((6, 8, 3), np.uint8), frame_type=FrameType.KEYFRAME, window=window,
                       revision=revision, sequence=sequence, world_points=points, world_points_conf=depth)


def _metric_pose(x: float) -> np.ndarray:
    pose = np.eye(4)
    pose[0, 3] = x
    return pose


def test_ratio_window_rejects_outliers_and_reports_its_spread():
    window = RatioWindow(size=10, outlier_threshold=3.0)
    for ratio in [2.0, 2.02, 1.98, 2.01, 1.99, 9.0, 0.1]:
        window.add(ratio)
    window.add(float("nan"))
    window.add(-1.0)
    estimate = window.estimate()
    assert len(window) == 7 and estimate.inliers == 5
    assert estimate.value == pytest.approx(2.0, rel=1e-3)
    assert 0.001 < estimate.relative_uncertainty < 0.01


def test_ratio_window_keeps_only_the_latest_samples():
    window = RatioWindow(size=3, outlier_threshold=3.0)
    for ratio in [5.0, 5.0, 5.0, 1.0, 1.0, 1.0]:
        window.add(ratio)
    assert window.estimate().value == pytest.approx(1.0)


def test_stamped_buffer_matches_the_nearest_stamp_within_the_tolerance():
    buffer: StampedBuffer[str] = StampedBuffer(capacity=3)
    for stamp, item in [(300, "c"), (100, "a"), (200, "b"), (400, "d")]:
        buffer.add(stamp, item)
    assert len(buffer) == 3  # the oldest (100) went
    assert buffer.nearest(260, 50) == "c" and buffer.nearest(240, 50) == "b"
    assert buffer.nearest(100, 50) is None and buffer.nearest(470, 50) is None


def test_pose_buffer_interpolates_positions_between_stamps():
    poses = PoseBuffer(capacity=10)
    poses.add(0, _metric_pose(0.0))
    poses.add(100_000_000, _metric_pose(1.0))
    assert poses.at(25_000_000, 0)[0, 3] == pytest.approx(0.25)
    assert poses.at(120_000_000, 30_000_000)[0, 3] == 1.0
    assert poses.at(200_000_000, 30_000_000) is None


def test_sensor_depth_is_sampled_through_the_resize_and_crop():
    geometry = model_size((120, 80), target_width=28)  # a tall image: resized to 28 wide, centre-cropped
    model_hw = geometry.model_hw
    intrinsics_input = np.array([[100.0, 0, 40], [0, 100.0, 60], [0, 0, 1]])
    intrinsics = geometry.intrinsics_to_model(intrinsics_input)
    rows, columns = np.mgrid[0:240, 0:160]  # the sensor at twice the input's resolution
    sensor = (rows * 1000 + columns).astype(np.float64)
    sampled = sensor_depth_at_model_pixels(sensor, (120, 80), model_hw, intrinsics, intrinsics_input)
    uv_model = np.array([[5.0, 7.0]])
    u_input, v_input = geometry.points_to_input(uv_model)[0]
    assert sampled[7, 5] == round(2 * v_input) * 1000 + round(2 * u_input)
    assert np.isfinite(sampled).all()
    every_other = sensor_depth_at_model_pixels(sensor, (120, 80), model_hw, intrinsics, intrinsics_input,
                                               stride=2)
    np.testing.assert_array_equal(every_other, sampled[::2, ::2])


@pytest.mark.parametrize(("options", "message"), [
    (ScaleOptions(source="metres"), "source='metres'"),
    (ScaleOptions(source="fixed", factor=0.0), "factor=0.0"),
    (ScaleOptions(source="camera_height"), "camera_height must be > 0"),
    (ScaleOptions(min_samples=40), "min_samples=40"),
    (ScaleOptions(smoothing=0.0), "smoothing=0.0"),
    (ScaleOptions(depth_min=5.0, depth_max=1.0), "depth_min=5.0"),
])
def test_options_refuse_what_cannot_work(options, message):
    with pytest.raises(ScaleOptionsError, match=message):
        options.validate()


def test_none_stays_unscaled_and_fixed_applies_at_once():
    none = MetricScale(ScaleOptions()).update(_result(0))
    assert not none.metric and none.scale == 1.0 and none.describe() == UNSCALED
    fixed = MetricScale(ScaleOptions(source="fixed", factor=2.5)).update(_result(0))
    assert fixed.metric and fixed.scale == 2.5 and fixed.relative_uncertainty == 0.0


def _drive(tracker: MetricScale, start: int, count: int, metres_per_unit: float, **result_options):
    state = None
    for i in range(start, start + count):
        state = tracker.update(_result(i, (0.1 * i, 0.0, 0.0), **result_options),
                               ScaleReference(camera_pose=_metric_pose(0.1 * i * metres_per_unit)))
    return state


def test_a_new_sequence_starts_unscaled_and_gets_its_own_estimate():
    tracker = MetricScale(ScaleOptions(source="odometry", min_samples=3))
    assert _drive(tracker, 0, 10, 2.0).scale == pytest.approx(2.0)
    assert not tracker.update(_result(10, sequence=1)).metric
    assert _drive(tracker, 11, 10, 3.0, sequence=1).scale == pytest.approx(3.0)


def test_a_new_window_keeps_the_scale_and_moves_smoothly_to_its_own_estimate():
    tracker = MetricScale(ScaleOptions(source="odometry", min_samples=3, smoothing=0.5))
    _drive(tracker, 0, 10, 2.0)
    assert _drive(tracker, 10, 3, 4.0, window=1).scale == pytest.approx(2.0)  # too few samples yet
    state = _drive(tracker, 13, 1, 4.0, window=1)
    assert 2.0 < state.scale < 4.0  # half way (geometrically), not a jump
    standing = tracker.update(_result(14, (1.3, 0.0, 0.0), window=1),
                              ScaleReference(camera_pose=_metric_pose(5.2)))
    assert standing == state  # no new sample, no move
    assert _drive(tracker, 14, 30, 4.0, window=1).scale == pytest.approx(4.0, rel=1e-3)


def test_revisions_add_no_samples():
    tracker = MetricScale(ScaleOptions(source="odometry", min_samples=1))
    for i in range(5):
        reference = ScaleReference(camera_pose=_metric_pose(i))
        tracker.update(_result(i, (0.1 * i, 0, 0), revision=True), reference)
    assert not tracker.state.metric


def test_odometry_ignores_increments_that_turn_too_much():
    options = ScaleOptions(source="odometry", odometry_max_turn_deg=20.0)
    source = OdometryScale(options)
    # The model turns 30 degrees and sees the camera move; the odometry (no mount) sees the base move.
    for i, yaw in enumerate([0.0, 30.0, 60.0]):
        reference = ScaleReference(camera_pose=_metric_pose(0.15 * i))
        source.add(_result(i, (0.1 * i, 0, 0), yaw_deg=yaw), reference)
    assert len(source.samples) == 0
    source.add(_result(3, (0.3, 0, 0), yaw_deg=70.0), ScaleReference(camera_pose=_metric_pose(0.45)))
    assert len(source.samples) == 1


def test_odometry_skips_positions_that_are_not_finite():
    source = OdometryScale(ScaleOptions(source="odometry"))
    broken = _metric_pose(0.0)
    broken[0, 3] = np.nan
    for i, pose in enumerate([_metric_pose(0.0), broken, _metric_pose(0.4), _metric_pose(0.6)]):
        source.add(_result(i, (0.1 * i, 0, 0)), ScaleReference(camera_pose=pose))
    assert len(source.samples) == 2 and source.samples.estimate().value == pytest.approx(2.0, rel=0.01)


def test_scaling_a_result_scales_depth_points_and_position_only():
    result = _result(3, (1.0, 2.0, 3.0), yaw_deg=10.0)
    scaled = scale_result(result, 2.5)
    np.testing.assert_array_equal(scaled.depth, result.depth * np.float32(2.5))
    np.testing.assert_array_equal(scaled.world_points, result.world_points * np.float32(2.5))
    np.testing.assert_array_equal(scaled.pose_c2w[:3, 3], [2.5, 5.0, 7.5])
    np.testing.assert_array_equal(scaled.pose_c2w[:3, :3], result.pose_c2w[:3, :3])
    for name in ("intrinsics", "intrinsics_input", "depth_conf", "image"):
        np.testing.assert_array_equal(getattr(scaled, name), getattr(result, name))
    assert scale_result(result, 1.0) is result
    assert scale_result(replace(result, world_points=None), 2.0).world_points is None
