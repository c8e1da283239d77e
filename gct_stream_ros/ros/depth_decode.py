"""Metric depth images (REP-118: ``32FC1`` metres, ``16UC1``/``mono16`` millimetres) to float32 metres.

Works on any object with the ``sensor_msgs/Image`` fields (rclpy messages and the rosbags
messages the offline tool reads). Invalid pixels (NaN, infinite, 0) become NaN.
"""

from __future__ import annotations

import numpy as np

from gct_stream_ros.ros.image_decode import ImageDecodeError

DEPTH_TYPES = {"32FC1": (np.float32, 1.0), "16UC1": (np.uint16, 0.001), "mono16": (np.uint16, 0.001)}
"""Encoding: (pixel type, metres per stored unit)."""


def depth_in_metres(message: object) -> np.ndarray:
    """``[H, W]`` float32 metres of a depth image message; ``ImageDecodeError`` when it is not one."""
    encoding = message.encoding
    if encoding not in DEPTH_TYPES:
        raise ImageDecodeError(f"depth image encoding {encoding!r} is not one of {', '.join(DEPTH_TYPES)}")
    pixel_type, metres_per_unit = DEPTH_TYPES[encoding]
    dtype = np.dtype(pixel_type).newbyteorder(">" if message.is_bigendian else "<")
    height, width, step = message.height, message.width, message.step
    if width == 0 or height == 0 or step < width * dtype.itemsize or len(message.data) != step * height:
        raise ImageDecodeError(f"depth image of {width}x{height}, step {step}, {len(message.data)} bytes "
                               f"does not hold {encoding} pixels")
    row_bytes = width * dtype.itemsize
    rows = np.frombuffer(bytes(message.data), dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    raw = rows.copy().view(dtype).reshape(height, width).astype(np.float32)
    depth = raw * np.float32(metres_per_unit)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth
