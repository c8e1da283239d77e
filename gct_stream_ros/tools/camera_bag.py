"""Record RGB frames as a camera bag (image + camera_info topics), without a ROS install.

The demo turns the synthetic sequence into a bag with it, and tests make small input bags.
Messages are built and serialized with the ``rosbags`` typestore.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from gct_stream_ros.stamps import split_stamp
from gct_stream_ros.tools.frame_source import (
    CAMERA_INFO_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    TYPESTORE,
)
from gct_stream_ros.tools.output_bag import OutputBag


def _header(stamp_ns: int, frame_id: str) -> object:
    sec, nanosec = split_stamp(stamp_ns)
    types = TYPESTORE.types
    return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                        frame_id=frame_id)


def image_cdr(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> bytes:
    height, width = rgb.shape[:2]
    message = TYPESTORE.types[IMAGE_TYPE](
        header=_header(stamp_ns, frame_id), height=height, width=width, encoding="rgb8", is_bigendian=0,
        step=3 * width, data=np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1))
    return bytes(TYPESTORE.serialize_cdr(message, IMAGE_TYPE))


def compressed_image_cdr(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> bytes:
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok, "PNG encoding of a uint8 image cannot fail"
    message = TYPESTORE.types[COMPRESSED_IMAGE_TYPE](header=_header(stamp_ns, frame_id), format="rgb8; png",
                                                     data=png.reshape(-1))
    return bytes(TYPESTORE.serialize_cdr(message, COMPRESSED_IMAGE_TYPE))


def camera_info_cdr(intrinsics: np.ndarray, width: int, height: int, stamp_ns: int, frame_id: str) -> bytes:
    k = np.asarray(intrinsics, dtype=np.float64)
    projection = np.zeros((3, 4))
    projection[:, :3] = k
    types = TYPESTORE.types
    message = types[CAMERA_INFO_TYPE](
        header=_header(stamp_ns, frame_id), height=height, width=width, distortion_model="plumb_bob",
        d=np.zeros(5), k=k.reshape(-1), r=np.eye(3).reshape(-1), p=projection.reshape(-1),
        binning_x=0, binning_y=0,
        roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                      do_rectify=False))
    return bytes(TYPESTORE.serialize_cdr(message, CAMERA_INFO_TYPE))


def write_camera_bag(path: Path, frames: Iterable[tuple[int, np.ndarray]],
                     intrinsics: np.ndarray | None = None, storage: str = "mcap",
                     image_topic: str = "/camera/image_raw", info_topic: str = "/camera/camera_info",
                     frame_id: str = "camera_optical_frame", compressed: bool = False) -> int:
    """Write ``(stamp_ns, rgb)`` frames, each with its camera_info when ``intrinsics`` is given.

    ``compressed`` writes PNG ``CompressedImage`` messages on ``image_topic``. Returns the frame count.
    """
    count = 0
    with OutputBag(path, storage) as bag:
        for stamp_ns, rgb in frames:
            if compressed:
                cdr = compressed_image_cdr(rgb, stamp_ns, frame_id)
            else:
                cdr = image_cdr(rgb, stamp_ns, frame_id)
            bag.write(image_topic, COMPRESSED_IMAGE_TYPE if compressed else IMAGE_TYPE, stamp_ns, cdr)
            if intrinsics is not None:
                bag.write(info_topic, CAMERA_INFO_TYPE, stamp_ns,
                          camera_info_cdr(intrinsics, rgb.shape[1], rgb.shape[0], stamp_ns, frame_id))
            count += 1
    return count
