"""The offline tool's inputs: ROS 2 and ROS 1 bags, raw/compressed/mono images, folders, stamps."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.typesys import Stores, get_typestore

from gct_stream_ros.tools.camera_bag import write_camera_bag
from gct_stream_ros.tools.frame_source import IMAGE_TYPE, TYPESTORE, InputError, open_frames
from gct_stream_ros.tools.output_bag import OutputBag

RNG = np.random.default_rng(5)
IMAGES = [RNG.integers(0, 255, (6, 8, 3), dtype=np.uint8) for _ in range(3)]
STAMPS = [1_000_000_007, 2_000_000_007, 3_000_000_007]


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_ros2_bags_give_rgb_frames_with_header_stamps(tmp_path, storage, compressed):
    write_camera_bag(tmp_path / "bag", zip(STAMPS, IMAGES), storage=storage, compressed=compressed,
                     frame_id="cam")
    source = open_frames(tmp_path / "bag")
    frames = list(source)
    assert len(source) == 3 and source.description == f"bag {tmp_path / 'bag'} topic /camera/image_raw"
    assert [f.stamp_ns for f in frames] == STAMPS and {f.frame_id for f in frames} == {"cam"}
    assert all(np.array_equal(f.image, image) for f, image in zip(frames, IMAGES))


def _header(stamp_ns: int):
    types = TYPESTORE.types
    sec, nanosec = divmod(stamp_ns, 10**9)
    return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                        frame_id="")


def _one_image_bag(path, pixels: np.ndarray, encoding: str, stamp_ns: int, recorded_ns: int):
    height, width = pixels.shape[:2]
    message = TYPESTORE.types[IMAGE_TYPE](header=_header(stamp_ns), height=height, width=width,
                                          encoding=encoding, is_bigendian=0, step=pixels.strides[0],
                                          data=pixels.reshape(-1))
    with OutputBag(path) as bag:
        bag.write("/image", IMAGE_TYPE, recorded_ns, bytes(TYPESTORE.serialize_cdr(message, IMAGE_TYPE)))
    return path


def test_mono_images_become_grey_rgb_and_zero_stamps_take_the_recording_time(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    (frame,) = open_frames(_one_image_bag(tmp_path / "bag", grey, "mono8", 0, 42))
    assert frame.stamp_ns == 42 and frame.image.shape == (6, 8, 3)
    assert all(np.array_equal(frame.image[..., c], grey) for c in range(3))


def test_an_undecodable_message_is_skipped_with_its_reason(tmp_path):
    source = open_frames(_one_image_bag(tmp_path / "bag", np.zeros((2, 2), np.uint8), "weird", 5, 5))
    assert list(source) == []
    (reason,) = source.skipped
    assert "message 0 of /image: cannot decode a 'weird' image" in reason


def test_ros1_bags_are_read_too(tmp_path):
    ros1 = get_typestore(Stores.ROS1_NOETIC)
    types = ros1.types
    path = tmp_path / "old.bag"
    with Ros1Writer(path) as writer:
        connection = writer.add_connection("/cam/image", IMAGE_TYPE, typestore=ros1)
        for index, (stamp, image) in enumerate(zip(STAMPS, IMAGES)):
            sec, nanosec = divmod(stamp, 10**9)
            header = types["std_msgs/msg/Header"](seq=index, stamp=types["builtin_interfaces/msg/Time"](
                sec=sec, nanosec=nanosec), frame_id="cam")
            message = types[IMAGE_TYPE](header=header, height=6, width=8, encoding="rgb8", is_bigendian=0,
                                        step=24, data=image.reshape(-1))
            writer.write(connection, stamp, ros1.serialize_ros1(message, IMAGE_TYPE))
    frames = list(open_frames(path))
    assert [f.stamp_ns for f in frames] == STAMPS
    assert all(np.array_equal(f.image, image) for f, image in zip(frames, IMAGES))


def test_folder_is_read_in_name_order_and_ignores_other_files(tmp_path):
    for name, image in zip(("b.png", "a.jpg", "c.PNG"), IMAGES):
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("not an image")
    frames = list(open_frames(tmp_path, fps=4.0, start_ns=STAMPS[0]))
    assert [f.stamp_ns for f in frames] == [STAMPS[0], STAMPS[0] + 250_000_000, STAMPS[0] + 500_000_000]
    assert np.array_equal(frames[1].image, IMAGES[0]) and np.array_equal(frames[2].image, IMAGES[2])


def test_folder_stamps_start_at_the_wall_clock_and_unreadable_images_are_skipped(tmp_path):
    for name, image in zip(("a.png", "c.png"), IMAGES):
        cv2.imwrite(str(tmp_path / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (tmp_path / "b.png").write_bytes(b"not a png")
    before = time.time_ns()
    source = open_frames(tmp_path, fps=4.0)
    frames = list(source)
    assert before <= frames[0].stamp_ns <= time.time_ns()
    assert [f.stamp_ns - frames[0].stamp_ns for f in frames] == [0, 500_000_000]
    assert source.skipped == [f"cannot read the image {tmp_path / 'b.png'}"]


def test_a_start_time_is_for_folders_and_videos_only(tmp_path):
    write_camera_bag(tmp_path / "bag", zip(STAMPS, IMAGES))
    with pytest.raises(InputError, match="--start-time applies to image folders and videos only"):
        open_frames(tmp_path / "bag", start_ns=STAMPS[0])


def test_frame_rate_must_be_positive(tmp_path):
    with pytest.raises(InputError, match="--fps must be positive"):
        open_frames(tmp_path, fps=0.0)
