"""Camera frames from a rosbag (ROS 2 sqlite3/MCAP or ROS 1), an image folder or a video file.

Everything here is ROS-free (the ``rosbags`` library reads bags without a ROS install), so
the offline tool, the player's tests and the demo share one reader. An input frame that cannot
be decoded is skipped and its reason kept in ``FrameSource.skipped``, as the node refuses a bad
message and goes on. Folders and videos have no clock: their frames are stamped from a start time
(the wall clock by default; a zero stamp would mean "latest" to tf2).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.image import ImageError, compressed_image_to_cvimage, message_to_cvimage
from rosbags.typesys import Stores, get_typestore

from gct_stream_ros.stamps import NS_PER_S, join_stamp

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Bags written without embedded definitions (old sqlite3 bags) are decoded with these types.
TYPESTORE = get_typestore(Stores.ROS2_KILTED)


class InputError(Exception):
    """The input cannot be used; the message is meant for the user (no traceback)."""


@dataclass
class Frame:
    stamp_ns: int
    image: np.ndarray
    """[H, W, 3] uint8 RGB."""
    frame_id: str = ""
    """The camera frame of the input message (empty for folders and videos)."""


class FrameSource:
    """An ordered, finite sequence of frames with a known length (for progress bars)."""

    description: str
    skipped: list[str]
    """Why each input frame that could not be decoded was left out, in input order."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Generator[Frame, None, None]:
        raise NotImplementedError


def is_bag(path: Path) -> bool:
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or path.suffix == ".bag"


def open_bag(path: Path) -> AnyReader:
    """An opened reader; ``InputError`` when the path is not a readable bag."""
    try:
        reader = AnyReader([path], default_typestore=TYPESTORE)
        reader.open()
    except (AnyReaderError, OSError, ValueError, KeyError) as error:
        raise InputError(f"cannot read the bag {path}: {error}") from None
    return reader


def image_topics(reader: AnyReader) -> list[str]:
    return sorted({c.topic for c in reader.connections if c.msgtype in IMAGE_TYPES})


def choose_image_topic(reader: AnyReader, topic: str | None, path: Path) -> str:
    """The requested topic, or the bag's only image topic; errors name the candidates."""
    topics = image_topics(reader)
    listing = ", ".join(topics) or "none"
    if topic is None:
        if len(topics) == 1:
            return topics[0]
        if not topics:
            raise InputError(f"{path} has no sensor_msgs/Image or CompressedImage topic")
        raise InputError(f"{path} has several image topics, choose one with --topic: {listing}")
    if topic not in topics:
        raise InputError(f"topic {topic} is not an image topic of {path}; image topics: {listing}")
    return topic


def decode_image(msg: object, msgtype: str) -> np.ndarray:
    """RGB uint8 pixels of an Image or CompressedImage message (rosbags or rclpy object)."""
    try:
        if msgtype == COMPRESSED_IMAGE_TYPE:
            image = compressed_image_to_cvimage(msg, "rgb8")
        else:
            image = message_to_cvimage(msg, "rgb8")
    except (ImageError, cv2.error, ValueError, TypeError) as error:  # TypeError: data shorter than the size
        encoding = getattr(msg, "encoding", None) or getattr(msg, "format", "?")
        raise InputError(f"cannot decode a {encoding!r} image: {error}") from None
    return np.ascontiguousarray(image, dtype=np.uint8)


def stamp_of(msg: object, fallback_ns: int) -> int:
    """The header stamp, or the recording time when the publisher left the stamp at zero."""
    stamp = msg.header.stamp
    stamp_ns = join_stamp(stamp.sec, stamp.nanosec)
    return stamp_ns or fallback_ns


class BagFrames(FrameSource):
    def __init__(self, path: Path, topic: str | None = None) -> None:
        self.path = path
        reader = open_bag(path)
        try:
            self.topic = choose_image_topic(reader, topic, path)
            self._count = sum(c.msgcount for c in reader.connections if c.topic == self.topic)
        finally:
            reader.close()
        self.description = f"bag {path} topic {self.topic}"
        self.skipped = []

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Generator[Frame, None, None]:
        reader = open_bag(self.path)
        try:
            connections = [c for c in reader.connections if c.topic == self.topic]
            for index, (connection, recorded_ns, raw) in enumerate(reader.messages(connections=connections)):
                msg = reader.deserialize(raw, connection.msgtype)
                try:
                    image = decode_image(msg, connection.msgtype)
                except InputError as error:
                    self.skipped.append(f"message {index} of {self.topic}: {error}")
                    continue
                yield Frame(stamp_of(msg, recorded_ns), image, msg.header.frame_id)
        finally:
            reader.close()


class FolderFrames(FrameSource):
    """Images sorted by file name, stamped ``start + index / fps`` seconds."""

    def __init__(self, path: Path, fps: float, start_ns: int) -> None:
        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise InputError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}) and is not a rosbag2 "
                             "directory (no metadata.yaml)")
        self.period_ns = round(NS_PER_S / fps)
        self.start_ns = start_ns
        self.description = f"folder {path} ({len(self.files)} images at {fps:g} fps)"
        self.skipped = []

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Generator[Frame, None, None]:
        for index, file in enumerate(self.files):
            bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if bgr is None:
                self.skipped.append(f"cannot read the image {file}")
                continue
            yield Frame(self.start_ns + index * self.period_ns, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


class VideoFrames(FrameSource):
    """Frames of a video file, stamped ``start`` plus their position in the video."""

    def __init__(self, path: Path, fallback_fps: float, start_ns: int) -> None:
        self.path = path
        self.start_ns = start_ns
        self.skipped = []
        capture = cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                raise InputError(f"{path} is neither a rosbag, an image folder nor a readable video")
            self._count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
            # Containers without a usable frame rate are stamped at the user's --fps.
            self.fps = capture.get(cv2.CAP_PROP_FPS) or fallback_fps
        finally:
            capture.release()
        self.description = f"video {path}"

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Generator[Frame, None, None]:
        capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                yield Frame(self.start_ns + round(index * NS_PER_S / self.fps),
                            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index += 1
            if index == 0:
                raise InputError(f"{self.path} contains no decodable video frame")
        finally:
            capture.release()


def open_frames(path: Path, topic: str | None = None, fps: float = 10.0,
                start_ns: int | None = None) -> FrameSource:
    """The right source for ``path``; ``InputError`` with a readable message otherwise.

    ``start_ns`` stamps the first frame of a folder or video (default: the wall clock now).
    """
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if fps <= 0:
        raise InputError(f"--fps must be positive, got {fps}")
    if is_bag(path):
        if start_ns is not None:
            raise InputError(f"--start-time applies to image folders and videos only; {path} is a rosbag "
                             "(its messages carry their stamps)")
        return BagFrames(path, topic)
    if topic is not None:
        raise InputError(f"--topic applies to rosbags only; {path} is not a rosbag")
    if start_ns is None:
        start_ns = time.time_ns()
    if path.is_dir():
        return FolderFrames(path, fps, start_ns)
    return VideoFrames(path, fps, start_ns)
