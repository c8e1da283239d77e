"""Odometry beyond the pose: odom continuous across sequences (the jump goes to map -> odom), covariance from
parameters, twist from consecutive poses in the child frame."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from gct_stream_ros.ros.odom_frame import OdomFrame  # noqa: E402
from gct_stream_ros.ros.odometry import OdometryCovariance, TwistTracker, twist_between  # noqa: E402


def _pose(x: float, yaw: float = 0.0) -> np.ndarray:
    """A pose at (x, 0, 0) turned by ``yaw`` about z."""
    pose = np.eye(4)
    pose[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    pose[0, 3] = x
    return pose


def test_odom_continues_from_the_last_pose_and_map_to_odom_takes_the_jump():
    odom = OdomFrame()
    for stamp, x in enumerate((0.0, 0.1, 0.2)):
        np.testing.assert_allclose(odom.pose_in_odom(_pose(x), stamp * 100_000_000), _pose(x))
    np.testing.assert_allclose(odom.map_from_odom, np.eye(4))
    odom.start_sequence()  # the new world frame starts at the robot: poses restart near identity
    first = odom.pose_in_odom(_pose(0.0, yaw=0.3), 300_000_000)
    np.testing.assert_allclose(first, _pose(0.2), atol=1e-12)  # no jump in odom
    assert odom.last_jump == pytest.approx(0.2)
    assert not odom.twist.linear.any()  # the robot did not move across the reset
    second = odom.pose_in_odom(_pose(0.1, yaw=0.3), 400_000_000)
    # 0.1 along the world's x in 0.1 s, seen from a child frame turned by 0.3 rad
    np.testing.assert_allclose(odom.twist.linear, [np.cos(0.3), -np.sin(0.3), 0.0], atol=1e-9)
    step = np.linalg.inv(first) @ second
    np.testing.assert_allclose(step, np.linalg.inv(_pose(0.0, yaw=0.3)) @ _pose(0.1, yaw=0.3), atol=1e-12)
    # map -> odom -> base composes to the new sequence's own estimate (map is the new world frame)
    np.testing.assert_allclose(odom.map_from_odom @ second, _pose(0.1, yaw=0.3), atol=1e-12)


def test_covariance_is_diagonal_from_the_standard_deviations():
    covariance = OdometryCovariance(0.05, 0.02, 0.1, 0.2)
    pose = np.array(covariance.pose).reshape(6, 6)
    twist = np.array(covariance.twist).reshape(6, 6)
    np.testing.assert_allclose(np.diag(pose), [0.0025] * 3 + [0.0004] * 3)
    np.testing.assert_allclose(np.diag(twist), [0.01] * 3 + [0.04] * 3)
    assert np.count_nonzero(pose - np.diag(np.diag(pose))) == 0


def test_twist_is_in_the_child_frame_over_the_stamp_difference():
    # Facing +y (yaw 90 deg) and moving 0.5 m along +y in 0.5 s: 1 m/s forward along the child's x.
    previous, current = _pose(0.0, np.pi / 2), _pose(0.0, np.pi / 2)
    current[1, 3] = 0.5
    twist = twist_between(previous, current, 500_000_000)
    np.testing.assert_allclose(twist.linear, [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(twist.angular, [0.0, 0.0, 0.0], atol=1e-12)
    turned = twist_between(_pose(0.0), _pose(0.0, 0.2), 100_000_000)
    np.testing.assert_allclose(turned.angular, [0.0, 0.0, 2.0], atol=1e-9)


def test_twist_tracker_starts_at_zero_and_ignores_stamps_that_do_not_advance():
    tracker = TwistTracker()
    assert not tracker.update(_pose(0.0), 1_000_000_000).linear.any()
    np.testing.assert_allclose(tracker.update(_pose(0.1), 1_100_000_000).linear, [1.0, 0.0, 0.0])
    assert not tracker.update(_pose(0.2), 1_100_000_000).linear.any()
