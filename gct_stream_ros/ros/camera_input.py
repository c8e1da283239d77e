"""An image message accepted for the model: decoded, of a size the model can take, with a camera frame.

Anything else is refused with ``ImageDecodeError`` saying why (the node counts and logs it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from gct_stream_ros.model.preprocess import PATCH_SIZE, model_size
from gct_stream_ros.ros.camera_info import size_mismatch
from gct_stream_ros.ros.image_decode import ImageDecodeError, decode_image
from gct_stream_ros.ros.messages import to_nanoseconds
from gct_stream_ros.stream.input_frame import PreparedImage

MAX_ASPECT_RATIO = 16
"""Images resized taller than this many model widths are refused: the model only sees a centred square
of them, and a thin sliver (1 x 1000000) would cost gigabytes to resize."""


@dataclass
class CameraFrame:
    """An image waiting for the model."""

    image: np.ndarray
    stamp_ns: int
    frame_id: str
    received_s: float = 0.0
    """``time.monotonic()`` when the image arrived (the start of its input-to-output latency)."""
    prepared: PreparedImage | None = None
    """The model input (``Session.prepare``), made on the executor thread so the worker only steps."""


def camera_frame(message: Image | CompressedImage, camera_info: CameraInfo | None, camera_frame_name: str,
                 image_width: int, received_s: float = 0.0) -> CameraFrame:
    """The frame of ``message``; its frame is ``camera_frame_name`` (``frames.camera``) when set, else the
    header's, else ``camera_info``'s."""
    image = decode_image(message)
    check_size(image, camera_info, image_width)
    frame_id = camera_frame_name or message.header.frame_id or (camera_info.header.frame_id if camera_info
                                                                 else "")
    if not frame_id:
        raise ImageDecodeError("no camera frame: the image header has no frame_id and frames.camera is "
                               "'auto'")
    return CameraFrame(image, to_nanoseconds(message.header.stamp), frame_id, received_s)


def check_size(image: np.ndarray, camera_info: CameraInfo | None, image_width: int) -> None:
    """Refuse sizes the model cannot take and sizes that disagree with ``camera_info`` (REP-104)."""
    height, width = image.shape[:2]
    resized_h, model_w = model_size((height, width), image_width).resized_hw
    if not PATCH_SIZE <= resized_h <= MAX_ASPECT_RATIO * model_w:
        raise ImageDecodeError(f"a {width}x{height} image would be resized to {model_w}x{resized_h} for "
                               f"the model (heights {PATCH_SIZE} to {MAX_ASPECT_RATIO * model_w} work)")
    mismatch = None if camera_info is None else size_mismatch(camera_info, width, height)
    if mismatch:
        raise ImageDecodeError(mismatch)
