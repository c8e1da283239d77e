"""Which ``CameraInfo`` belongs to an image, and what image size it describes (REP-104).

Images and their ``CameraInfo`` come on two topics; a driver stamps both with the capture time.
``CameraInfoSync`` pairs them by exact stamp, as message_filters' TimeSynchronizer does: an image
whose info has not arrived yet waits in a small queue, and an info matches the images already
waiting. Matching by arrival instead pairs the first image after a resolution change with the
old info (rejected for a wrong size) and hides an image whose own info disagrees. ``latest`` pairs
each image with the newest info, for drivers that do not stamp both alike. Until the first info
arrives images pass alone: ``camera_info`` is optional.

REP-104: the calibration (``width`` x ``height``) is at full sensor resolution; an image taken with
a region of interest and binning is ``roi.width / binning_x`` x ``roi.height / binning_y`` (a zero
ROI size is the full size, binning 0 and 1 both mean none).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo

from gct_stream_ros.ros.messages import to_nanoseconds
from gct_stream_ros.settings import CAMERA_INFO_SYNC_MODES

QUEUE_SIZE = 10
"""Images waiting for their info and infos waiting for their image, each (depth_image_proc queues 5)."""

Item = TypeVar("Item")


def expected_image_size(info: CameraInfo) -> tuple[int, int] | None:
    """``(width, height)`` of the images ``info`` describes, or None when it gives no size."""
    if not info.width or not info.height:
        return None
    roi = info.roi
    width = roi.width or info.width
    height = roi.height or info.height
    return width // max(info.binning_x, 1), height // max(info.binning_y, 1)


def size_mismatch(info: CameraInfo, width: int, height: int) -> str | None:
    """Why a ``width`` x ``height`` image does not fit ``info``, or None when it does."""
    expected = expected_image_size(info)
    if expected is None or expected == (width, height):
        return None
    how = f"{info.width}x{info.height}"
    if info.roi.width or info.roi.height:
        how += f", ROI {info.roi.width}x{info.roi.height}"
    if max(info.binning_x, 1) > 1 or max(info.binning_y, 1) > 1:
        how += f", binning {info.binning_x}x{info.binning_y}"
    return f"image is {width}x{height} but camera_info ({how}) says {expected[0]}x{expected[1]}"


@dataclass
class Paired(Generic[Item]):
    """An image (whatever the caller queues) with its info (None: no info has ever arrived)."""

    item: Item
    info: CameraInfo | None


class CameraInfoSync(Generic[Item]):
    """Pairs images with the ``CameraInfo`` of the same stamp; not thread-safe (one executor thread)."""

    def __init__(self, mode: str = "exact", queue_size: int = QUEUE_SIZE) -> None:
        if mode not in CAMERA_INFO_SYNC_MODES:
            raise ValueError(f"camera_info sync mode {mode!r} is not one of "
                             f"{', '.join(CAMERA_INFO_SYNC_MODES)}")
        self.mode = mode
        self._infos: deque[CameraInfo] = deque(maxlen=queue_size)
        self._waiting: deque[tuple[int, Item]] = deque()
        self._queue_size = queue_size
        self.unmatched = 0
        """Images given up on: their info never came while they waited."""

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def latest_stamp_ns(self) -> int | None:
        """Stamp of the newest info; None before the first."""
        return to_nanoseconds(self._infos[-1].header.stamp) if self._infos else None

    def add_info(self, info: CameraInfo) -> list[Paired[Item]]:
        """Store ``info``; the images waiting for its stamp, now paired."""
        self._infos.append(info)
        stamp_ns = to_nanoseconds(info.header.stamp)
        matched = [Paired(item, info) for stamp, item in self._waiting if stamp == stamp_ns]
        if matched:
            self._waiting = deque((stamp, item) for stamp, item in self._waiting if stamp != stamp_ns)
        return matched

    def add_image(self, item: Item, stamp: Time) -> list[Paired[Item]]:
        """``item`` (an image stamped ``stamp``) paired with its info when it is known (or not needed);
        otherwise it waits and the result is empty. A full queue gives up on its oldest image (counted in
        ``unmatched``)."""
        stamp_ns = to_nanoseconds(stamp)
        if not self._infos:
            return [Paired(item, None)]
        if self.mode == "latest":
            return [Paired(item, self._infos[-1])]
        for info in reversed(self._infos):
            if to_nanoseconds(info.header.stamp) == stamp_ns:
                return [Paired(item, info)]
        self._waiting.append((stamp_ns, item))
        while len(self._waiting) > self._queue_size:
            self._waiting.popleft()
            self.unmatched += 1
        return []

    def clear(self) -> None:
        """Forget waiting images (not counted) and known infos."""
        self._waiting.clear()
        self._infos.clear()
