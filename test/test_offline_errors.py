"""gct_stream_offline's bad inputs end with one clear line on stderr and exit status 2, no traceback."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not importable (the offline tool builds ROS messages)")

from gct_stream_ros.tools.camera_bag import image_cdr, write_camera_bag  # noqa: E402
from gct_stream_ros.tools.frame_source import IMAGE_TYPE  # noqa: E402
from gct_stream_ros.tools.offline import main  # noqa: E402
from gct_stream_ros.tools.output_bag import OutputBag  # noqa: E402

TINY = ["-p", "model.preset:=tiny", "-p", "model.checkpoint:=", "--quiet"]


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
                   "-p", "model.num_scale_frames:=4")
    assert "window_overlap=9" in error and "window.overlap" in error


def test_bad_params_file(capsys, two_camera_bag, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("gct_stream_node:\n  ros__parameters:\n    model: {image_width: 30}\n")
    assert "model.image_width=30" in _error(capsys, two_camera_bag, "-o", tmp_path, "--params-file", params)


def test_existing_output_bag_is_not_overwritten(capsys, tmp_path):
    source = tmp_path / "input"
    write_camera_bag(source, [(1, np.zeros((28, 28, 3), np.uint8))])
    (tmp_path / "out" / "bag").mkdir(parents=True)
    assert "already exists" in _error(capsys, source, "-o", tmp_path / "out")
