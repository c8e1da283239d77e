"""Metric depth messages to metres: 32FC1 metres, 16UC1 millimetres, padded rows, invalid pixels, bad data."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not importable")

from sensor_msgs.msg import Image  # noqa: E402

from gct_stream_ros.ros.depth_decode import depth_in_metres  # noqa: E402
from gct_stream_ros.ros.image_decode import ImageDecodeError  # noqa: E402


def _message(array: np.ndarray, encoding: str, padding: int = 0, big_endian: bool = False) -> Image:
    data = array.astype(array.dtype.newbyteorder(">" if big_endian else "<"))
    rows = np.zeros((array.shape[0], array.shape[1] * array.itemsize + padding), np.uint8)
    rows[:, :array.shape[1] * array.itemsize] = data.view(np.uint8).reshape(array.shape[0], -1)
    return Image(height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=int(big_endian),
                 step=rows.shape[1], data=rows.tobytes())


def test_millimetres_become_metres_and_zero_is_invalid():
    depth = depth_in_metres(_message(np.array([[1500, 0], [65535, 250]], np.uint16), "16UC1", padding=4))
    np.testing.assert_allclose(depth, [[1.5, np.nan], [65.535, 0.25]], rtol=1e-6)


@pytest.mark.parametrize("big_endian", [False, True])
def test_float_metres_keep_their_value_and_non_finite_is_invalid(big_endian):
    values = np.array([[2.25, np.inf], [-1.0, 0.5]], np.float32)
    depth = depth_in_metres(_message(values, "32FC1", big_endian=big_endian))
    np.testing.assert_array_equal(depth, [[2.25, np.nan], [np.nan, 0.5]])


def test_colour_images_and_short_data_are_refused():
    with pytest.raises(ImageDecodeError, match="'rgb8' is not one of"):
        depth_in_metres(Image(height=1, width=1, encoding="rgb8", step=3, data=b"abc"))
    message = _message(np.ones((2, 2), np.float32), "32FC1")
    message.data = message.data[:-1]
    with pytest.raises(ImageDecodeError, match="does not hold 32FC1 pixels"):
        depth_in_metres(message)
