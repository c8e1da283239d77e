"""Camera messages to RGB: every supported encoding, compressed images, and clear refusals."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from ros_fixtures import random_image

pytestmark = pytest.mark.ros

from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from gct_stream_ros.ros import image_decode  # noqa: E402
from gct_stream_ros.ros.image_decode import ImageDecodeError, decode_image  # noqa: E402

RGB = random_image(8, 6, seed=4)


def raw(array: np.ndarray, encoding: str, step_padding: int = 0) -> Image:
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    row = array.reshape(height, -1).view(np.uint8)
    padded = np.zeros((height, row.shape[1] + step_padding), np.uint8)
    padded[:, :row.shape[1]] = row
    message = Image(height=height, width=width, encoding=encoding, step=padded.shape[1])
    message.data = padded.tobytes()
    return message


def test_a_cv_bridge_failure_is_logged_once_and_rosbags_image_takes_over(monkeypatch, caplog):
    class BrokenBridge:
        def imgmsg_to_cv2(self, message, desired_encoding):
            raise AttributeError("_ARRAY_API not found")

    monkeypatch.setattr(image_decode, "_bridge", BrokenBridge)
    monkeypatch.setattr(image_decode, "_bridge_failures_logged", set())
    for _ in range(3):
        np.testing.assert_array_equal(decode_image(raw(RGB, "rgb8")), RGB)
    warnings = [r.getMessage() for r in caplog.records if r.name == "gct_stream_ros.ros.image_decode"]
    assert warnings == ["cv_bridge could not convert an image (AttributeError: _ARRAY_API not found); using "
                        "rosbags-image instead (logged once)"]


@pytest.fixture(params=["rosbags-image", "cv_bridge"])
def decoder(request, monkeypatch):
    """Run each test through both conversion paths where they exist."""
    if request.param == "cv_bridge":
        if image_decode.CvBridge is None:
            pytest.skip("ROS cv_bridge is not importable here (pip-only machine)")
    else:
        monkeypatch.setattr(image_decode, "_bridge", lambda: None)
    return decode_image


@pytest.mark.parametrize(("encoding", "convert"), [
    ("rgb8", lambda rgb: rgb),
    ("bgr8", lambda rgb: rgb[..., ::-1]),
    ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])),
    ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)])),
    ("rgb16", lambda rgb: rgb.astype("<u2") * 257),
])
def test_colour_encodings_give_back_the_rgb(decoder, encoding, convert):
    np.testing.assert_array_equal(decoder(raw(convert(RGB), encoding)), RGB)


def test_row_padding_is_honoured(decoder):
    np.testing.assert_array_equal(decoder(raw(RGB, "rgb8", step_padding=5)), RGB)


@pytest.mark.parametrize(("encoding", "array"), [
    ("mono8", RGB[..., 1]),
    ("mono16", RGB[..., 1].astype("<u2") * 257),
])
def test_grey_images_become_grey_rgb(decoder, encoding, array):
    decoded = decoder(raw(array, encoding))
    np.testing.assert_array_equal(decoded, np.repeat(RGB[..., 1:2], 3, axis=2))


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8",
                                      "bayer_rggb16"])
def test_bayer_images_are_demosaiced(decoder, encoding):
    mosaic = np.full((6, 8), 200, np.uint8)
    if encoding.endswith("16"):
        mosaic = mosaic.astype("<u2") * 257
    decoded = decoder(raw(mosaic, encoding))
    assert decoded.shape == (6, 8, 3) and decoded.dtype == np.uint8
    np.testing.assert_allclose(decoded, 200, atol=1)


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuyv", "yuv422_yuy2"])
def test_yuv422_grey_decodes_to_grey(decoder, encoding):
    # Neutral chroma (128) and luma 128 in both byte orders is mid grey.
    decoded = decoder(raw(np.full((6, 8, 2), 128, np.uint8), encoding))
    assert decoded.shape == (6, 8, 3)
    np.testing.assert_allclose(decoded, 128, atol=3)


@pytest.mark.parametrize(("message", "reason"), [
    (raw(RGB, "8UC3"), "unsupported encoding '8UC3'"),
    (raw(RGB[..., 0].astype("<f4"), "32FC1"), "unsupported encoding"),
    (Image(height=0, width=0, encoding="rgb8"), "empty image"),
    (Image(height=2, width=2, encoding="rgb8", step=4, data=bytes(8)), "step 4 is smaller"),
    (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(11)), "data holds 11 bytes"),
    (raw(np.zeros((2, 3, 2), np.uint8), "uyvy"), "even width"),
])
def test_bad_raw_images_are_refused_with_the_reason(decoder, message, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decoder(message)


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_compressed_images(decoder, extension):
    smooth = np.zeros((16, 16, 3), np.uint8)
    smooth[..., 0] = np.arange(16)[:, None] * 8
    smooth[..., 1] = np.arange(16)[None, :] * 8
    smooth[..., 2] = 90  # a gradient survives JPEG nearly intact, so the channel order is checked too
    bgr = cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(extension, bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    decoded = decoder(CompressedImage(format=f"rgb8; {extension[1:]} compressed rgb8", data=data.tobytes()))
    np.testing.assert_allclose(decoded.astype(int), smooth.astype(int), atol=0 if extension == ".png" else 6)


@pytest.mark.parametrize(("data", "reason"), [(b"", "without data"), (b"\x89PNG garbage", "cannot decode")])
def test_corrupt_compressed_images_are_refused(decoder, data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decoder(CompressedImage(format="png", data=data))
