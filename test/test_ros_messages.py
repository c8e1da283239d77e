"""FrameResult -> ROS messages: depth encodings, confidence, camera_info, clouds, poses."""

from __future__ import annotations

import numpy as np
import pytest
from ros_fixtures import fake_result, random_image

pytestmark = pytest.mark.ros

from gct_stream_ros.ros import messages  # noqa: E402


def _result(width: int = 8, height: int = 6):
    return fake_result(2, 1_700_000_000_123_456_789, random_image(width, height))


def test_header_stamp_and_back():
    header = messages.header(1_700_000_000_123_456_789, "cam")
    assert (header.stamp.sec, header.stamp.nanosec, header.frame_id) == (1_700_000_000, 123_456_789, "cam")
    assert messages.to_nanoseconds(header.stamp) == 1_700_000_000_123_456_789


def test_depth_32fc1_is_metres_with_nan_for_invalid():
    result = _result()
    image = messages.depth_image(result, "cam")
    values = np.frombuffer(bytes(image.data), "<f4").reshape(6, 8)
    assert (image.encoding, image.step, image.is_bigendian) == ("32FC1", 32, 0)
    assert np.isnan(values[0, 0]) and np.all(values.flat[1:] == 2.0)
    assert messages.to_nanoseconds(image.header.stamp) == result.stamp_ns


def test_depth_16uc1_is_scaled_by_1000_with_zero_for_invalid_and_overflow():
    result = _result()
    result.depth[0, 1] = 70.0  # 70000 does not fit in 16 bits
    image = messages.depth_image(result, "cam", "16UC1")
    values = np.frombuffer(bytes(image.data), "<u2").reshape(6, 8)
    assert (image.encoding, image.step) == ("16UC1", 16)
    assert values[0, 0] == 0 and values[0, 1] == 0 and values[0, 2] == 2000


def test_unknown_depth_encoding_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        messages.depth_image(_result(), "cam", "8UC1")


def test_confidence_and_camera_info_at_depth_resolution():
    result = _result()
    confidence = messages.confidence_image(result, "cam")
    values = np.frombuffer(bytes(confidence.data), "<f4").reshape(6, 8)
    np.testing.assert_array_equal(values, result.depth_conf)
    info = messages.camera_info(result, "cam")
    assert (info.width, info.height, info.distortion_model) == (8, 6, "plumb_bob")
    np.testing.assert_array_equal(np.array(info.k).reshape(3, 3), result.intrinsics)
    np.testing.assert_array_equal(np.array(info.p).reshape(3, 4)[:, :3], result.intrinsics)


def test_cloud_points_decimate_filter_and_transform():
    result = _result()
    shift = np.eye(4)
    shift[:3, 3] = (1.0, 2.0, 3.0)
    xyz, rgb = messages.cloud_points(result, shift, decimation=2, min_confidence=0.0)
    assert len(xyz) == 3 * 4 - 1  # the NaN point at (0, 0) is gone
    np.testing.assert_allclose(xyz[0], result.world_points[0, 2] + (1, 2, 3), atol=1e-6)
    np.testing.assert_array_equal(rgb[0], result.image[0, 2])
    confident, _ = messages.cloud_points(result, np.eye(4), decimation=1, min_confidence=3.0)
    assert len(confident) == int((result.depth_conf >= 3.0).sum())


def test_points_fall_back_to_back_projected_depth():
    result = _result()
    expected, _ = messages.cloud_points(result, np.eye(4))
    result.world_points = None
    result.world_points_conf = None
    back_projected, _ = messages.cloud_points(result, np.eye(4))
    np.testing.assert_allclose(back_projected, expected, atol=1e-5)


def test_point_cloud_layout_and_round_trip():
    rng = np.random.default_rng(3)
    xyz = rng.normal(size=(10, 3)).astype(np.float32)
    rgb = rng.integers(0, 255, (10, 3), dtype=np.uint8)
    cloud = messages.point_cloud(xyz, rgb, 5, "map")
    assert [(f.name, f.offset, f.datatype, f.count) for f in cloud.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1)]
    layout = (cloud.height, cloud.width, cloud.point_step, cloud.row_step, cloud.is_dense)
    assert layout == (1, 10, 16, 160, True)
    packed = np.frombuffer(bytes(cloud.data), "<u4").reshape(10, 4)[:, 3]
    assert packed[0] == (int(rgb[0, 0]) << 16) | (int(rgb[0, 1]) << 8) | int(rgb[0, 2])
    back_xyz, back_rgb = messages.unpack_point_cloud(cloud)
    np.testing.assert_array_equal(back_xyz, xyz)
    np.testing.assert_array_equal(back_rgb, rgb)


def test_unpack_refuses_foreign_layouts():
    cloud = messages.point_cloud(np.zeros((1, 3), np.float32), np.zeros((1, 3), np.uint8), 0, "map")
    cloud.point_step = 32
    with pytest.raises(ValueError, match="point_step"):
        messages.unpack_point_cloud(cloud)


def test_pose_messages_have_unit_quaternions():
    matrix = np.eye(4)
    yaw_90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    matrix[:3, :3] = 1.01 * yaw_90  # slightly scaled: the quaternion must still be unit
    matrix[:3, 3] = (1.0, 2.0, 3.0)
    odometry = messages.odometry(matrix, 7, "map", "cam")
    q = odometry.pose.pose.orientation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, 0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-9)
    assert (odometry.header.frame_id, odometry.child_frame_id) == ("map", "cam")
    transform = messages.transform_stamped(matrix, 7, "map", "cam")
    assert (transform.transform.translation.x, transform.transform.translation.z) == (1.0, 3.0)
    assert transform.transform.rotation == odometry.pose.pose.orientation
    path = messages.path([messages.pose_stamped(matrix, 7, "map")] * 2, 7, "map")
    assert len(path.poses) == 2 and path.poses[0].pose.position.y == 2.0
