"""gct_stream_offline's bad inputs end with one clear line on stderr and exit status 2, no traceback."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not importable (the offline tool builds ROS messages)")

from gct_stream_ros.mapping.tum import read_tum  # noqa: E402
from gct_stream_ros.tools.camera_bag import image_cdr, write_camera_bag  # noqa: E402
from gct_stream_ros.tools.frame_source import IMAGE_TYPE, TYPESTORE  # noqa: E402
from gct_stream_ros.tools.offline import main  # noqa: E402
from gct_stream_ros.tools.output_bag import OutputBag  # noqa: E402

TINY = ["-p", "model.preset:=tiny", "-p", "model.image_width:=28", "--quiet"]  # random weights: the preset's


@pytest.fixture(scope="module")
def two_camera_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("errors") / "two_cameras"
    image = np.zeros((4, 6, 3), np.uint8)
    with OutputBag(path) as bag:
        for topic in ("/left/image", "/right/image"):
            bag.write(topic, IMAGE_TYPE, 1, image_cdr(image, 1, "cam"))
    return path


def _error(capsys, *argv) -> str:
    assert main([*map(str, argv), *TINY]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gct_stream_offline: error: ") and "Traceback" not in error
    return error


def test_missing_topic_lists_the_image_topics(capsys, two_camera_bag, tmp_path):
    error = _error(capsys, two_camera_bag, "-o", tmp_path, "--topic", "/camera/image_raw")
    assert "/camera/image_raw is not an image topic" in error
    assert "image topics: /left/image, /right/image" in error


def test_several_image_topics_need_a_choice(capsys, two_camera_bag, tmp_path):
    error = _error(capsys, two_camera_bag, "-o", tmp_path)
    assert "several image topics, choose one with --topic: /left/image, /right/image" in error


def test_unreadable_bag(capsys, tmp_path):
    bag = tmp_path / "broken"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: 9}\n")
    assert "cannot read the bag" in _error(capsys, bag, "-o", tmp_path / "out")


def test_empty_folder(capsys, tmp_path):
    (tmp_path / "images").mkdir()
    assert "holds no images" in _error(capsys, tmp_path / "images", "-o", tmp_path / "out")


def test_missing_input(capsys, tmp_path):
    assert "does not exist" in _error(capsys, tmp_path / "nothing", "-o", tmp_path / "out")


def test_not_a_video(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "neither a rosbag, an image folder nor a readable video" in _error(capsys, tmp_path / "notes.txt",
                                                                               "-o", tmp_path / "out")


def test_topic_without_a_bag(capsys, tmp_path):
    (tmp_path / "images").mkdir()
    assert "--topic applies to rosbags only" in _error(capsys, tmp_path / "images", "-o", tmp_path / "out",
                                                       "--topic", "/x")


def test_unknown_parameter_suggests_the_name(capsys, two_camera_bag, tmp_path):
    error = _error(capsys, two_camera_bag, "-o", tmp_path, "-p", "model.presett:=tiny")
    assert "unknown parameter 'model.presett'" in error and "model.preset" in error


def test_inconsistent_parameters(capsys, two_camera_bag, tmp_path):
    error = _error(capsys, two_camera_bag, "-o", tmp_path, "-p", "window.overlap:=9",
                   "-p", "window.mode:=online", "-p", "model.num_scale_frames:=4")
    assert "window_overlap=9" in error and "window.overlap" in error


def test_bad_params_file(capsys, two_camera_bag, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("gct_stream_node:\n  ros__parameters:\n    model: {image_width: 30}\n")
    assert "model.image_width=30" in _error(capsys, two_camera_bag, "-o", tmp_path, "--params-file", params)


def test_existing_output_bag_is_kept_unless_overwrite(capsys, tmp_path):
    source = tmp_path / "input"
    write_camera_bag(source, [(1, np.zeros((28, 28, 3), np.uint8))])
    (tmp_path / "out" / "bag").mkdir(parents=True)
    assert "already exists" in _error(capsys, source, "-o", tmp_path / "out")
    assert main([str(source), "-o", str(tmp_path / "out"), "--overwrite", *TINY]) == 0
    assert (tmp_path / "out" / "bag" / "metadata.yaml").is_file()


def test_an_unwritable_output_directory_is_one_line(capsys, tmp_path):
    source = tmp_path / "input"
    write_camera_bag(source, [(1, np.zeros((28, 28, 3), np.uint8))])
    (tmp_path / "blocker").write_text("a file where the output folder should go")
    error = _error(capsys, source, "-o", tmp_path / "blocker" / "out")
    assert f"cannot write to {tmp_path / 'blocker' / 'out'}" in error and error.count("\n") == 1


def test_an_undecodable_frame_is_skipped_and_the_run_finishes(capsys, tmp_path):
    source = tmp_path / "input"
    image = np.full((28, 28, 3), 90, np.uint8)
    with OutputBag(source) as bag:
        for stamp in range(1, 6):
            cdr = image_cdr(image, stamp, "cam")
            if stamp == 3:  # a message whose data is cut short: it cannot be decoded
                message = TYPESTORE.deserialize_cdr(cdr, IMAGE_TYPE)
                message.data = message.data[:10]
                cdr = bytes(TYPESTORE.serialize_cdr(message, IMAGE_TYPE))
            bag.write("/camera/image_raw", IMAGE_TYPE, stamp, cdr)
    output = tmp_path / "out"
    assert main([str(source), "-o", str(output), *TINY]) == 0
    printed = capsys.readouterr()
    assert "warning: skipped an input frame: message 2 of /camera/image_raw" in printed.err
    assert "4 frames" in printed.out and "1 input frames skipped" in printed.out
    stamps, _ = read_tum(output / "trajectory.tum")
    assert stamps == [1, 2, 4, 5] and (output / "map.ply").is_file()


def test_a_message_type_without_type_support_is_one_line_at_start_up(capsys, monkeypatch, tmp_path):
    """The C type support is loaded before the writer thread starts: a failure names the type and why."""
    from rclpy.exceptions import NoTypeSupportImportedException  # noqa: PLC0415
    from sensor_msgs.msg import PointCloud2  # noqa: PLC0415

    from gct_stream_ros.ros import type_support  # noqa: PLC0415

    real_check = type_support.check_for_type_support

    def check(message_type):
        if message_type is PointCloud2:
            raise NoTypeSupportImportedException()
        real_check(message_type)

    monkeypatch.setattr(type_support, "check_for_type_support", check)
    image = np.zeros((4, 6, 3), np.uint8)
    bag_path = tmp_path / "camera"
    with OutputBag(bag_path) as bag:
        bag.write("/camera/image", IMAGE_TYPE, 1, image_cdr(image, 1, "cam"))
    error = _error(capsys, bag_path, "-o", tmp_path / "out")
    assert "cannot serialize sensor_msgs/PointCloud2: its C type support does not import" in error
    assert not (tmp_path / "out" / "trajectory.tum").exists()
