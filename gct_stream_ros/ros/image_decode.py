"""Camera messages (``sensor_msgs/Image`` in any common encoding, ``CompressedImage``) to RGB uint8.

The message is checked first (known encoding, non-zero size, step and data length), so a bad
message is refused with a reason instead of crashing a converter. The conversion uses ROS's
``cv_bridge`` when it is importable and ``rosbags-image`` otherwise, or when ``cv_bridge``
fails (a cv_bridge built against NumPy 1 fails under NumPy 2).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
from rosbags.image import compressed_image_to_cvimage, message_to_cvimage
from sensor_msgs.msg import CompressedImage, Image

try:
    from cv_bridge import CvBridge
except ImportError:  # pip-only machines: rosbags-image does the work
    CvBridge = None

logger = logging.getLogger(__name__)
BYTES_PER_PIXEL = {
    "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2,
    "rgb16": 6, "bgr16": 6, "rgba16": 8, "bgra16": 8,
    "yuv422": 2, "uyvy": 2, "yuyv": 2, "yuv422_yuy2": 2,
    **{f"bayer_{pattern}{bits}": bits // 8
       for pattern in ("rggb", "bggr", "gbrg", "grbg") for bits in (8, 16)},
}
"""Encodings accepted as colour input, with their packed pixel size."""
_PAIRED_PIXEL_ENCODINGS = ("yuv422", "uyvy", "yuyv", "yuv422_yuy2")
"""Two pixels share their chroma: the width must be even."""


class ImageDecodeError(ValueError):
    """The message cannot be turned into an RGB image; the text says why."""


@functools.cache
def _bridge() -> object | None:
    return None if CvBridge is None else CvBridge()


def check_image(message: Image) -> None:
    """Raise ``ImageDecodeError`` unless the raw image's encoding, size, step and data agree."""
    encoding = message.encoding
    if encoding not in BYTES_PER_PIXEL:
        raise ImageDecodeError(f"unsupported encoding {encoding!r} (supported: {', '.join(BYTES_PER_PIXEL)})")
    if message.width == 0 or message.height == 0:
        raise ImageDecodeError(f"empty image ({message.width}x{message.height})")
    row_bytes = message.width * BYTES_PER_PIXEL[encoding]
    if message.step < row_bytes:
        raise ImageDecodeError(f"step {message.step} is smaller than a row of {message.width} {encoding} "
                               f"pixels ({row_bytes} bytes)")
    if len(message.data) != message.step * message.height:
        raise ImageDecodeError(f"data holds {len(message.data)} bytes, step x height is "
                               f"{message.step * message.height}")
    if encoding in _PAIRED_PIXEL_ENCODINGS and message.width % 2:
        raise ImageDecodeError(f"{encoding} needs an even width, got {message.width}")


def decode_image(message: Image | CompressedImage) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB of a raw or compressed camera message; ``ImageDecodeError`` if impossible."""
    compressed = isinstance(message, CompressedImage)
    if compressed:
        if len(message.data) == 0:
            raise ImageDecodeError("compressed image without data")
    else:
        check_image(message)
        message = _without_row_padding(message)
    bridge = _bridge()
    if bridge is not None:
        try:
            if compressed:
                return _as_rgb(bridge.compressed_imgmsg_to_cv2(message, desired_encoding="rgb8"))
            return _as_rgb(bridge.imgmsg_to_cv2(message, desired_encoding="rgb8"))
        except Exception as error:  # any bridge failure: the pure-Python path below may still succeed
            _log_bridge_failure(error)
    try:
        if compressed:
            return _as_rgb(compressed_image_to_cvimage(message, "rgb8"))
        return _as_rgb(message_to_cvimage(message, "rgb8"))
    except Exception as error:  # the converters raise OpenCV, NumPy and their own errors alike
        kind = f"compressed ({message.format or 'unknown format'})" if compressed else message.encoding
        raise ImageDecodeError(f"cannot decode {kind} image: {error}".strip()) from error


def _log_bridge_failure(error: Exception) -> None:
    """Say why cv_bridge failed, once per exception type (a NumPy 1 build fails on every image)."""
    kind = type(error).__name__
    if kind not in _bridge_failures_logged:
        _bridge_failures_logged.add(kind)
        logger.warning("cv_bridge could not convert an image (%s: %s); using rosbags-image instead (logged "
                       "once)", kind, error)


_bridge_failures_logged: set[str] = set()


def _without_row_padding(message: Image) -> Image:
    """The same image with ``step`` equal to the row size (rosbags-image ignores row padding)."""
    row_bytes = message.width * BYTES_PER_PIXEL[message.encoding]
    if message.step == row_bytes:
        return message
    rows = np.frombuffer(bytes(message.data), np.uint8).reshape(message.height, message.step)[:, :row_bytes]
    packed = Image(header=message.header, height=message.height, width=message.width,
                   encoding=message.encoding, is_bigendian=message.is_bigendian, step=row_bytes)
    packed.data = rows.tobytes()
    return packed


def _as_rgb(image: np.ndarray | None) -> np.ndarray:
    if image is None or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise ImageDecodeError(f"decoder returned no RGB image (shape {getattr(image, 'shape', None)})")
    return np.ascontiguousarray(image, dtype=np.uint8)
