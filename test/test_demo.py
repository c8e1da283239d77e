"""The embedded demo end to end: synthetic bag -> real node (tiny model) -> recorded outputs and map."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("rclpy", reason="rclpy not importable")

from rosbags.highlevel import AnyReader  # noqa: E402

from gct_stream_ros.mapping.ply import read_ply  # noqa: E402
from gct_stream_ros.mapping.tum import read_tum  # noqa: E402
from gct_stream_ros.tools.demo import START_NS, main  # noqa: E402
from gct_stream_ros.tools.frame_source import TYPESTORE, open_frames  # noqa: E402

DOMAIN_ID = "174"
"""Its own: test_ros_engine.py has 172, and a foreign /tf on the domain would spoil the TF summary."""
FRAMES = 16
pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("demo") / "demo_output"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_DOMAIN_ID", DOMAIN_ID)
        patch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # what main sets, undone afterwards
        status = main(["--output", str(output), "--frames", str(FRAMES), "--rate", "4", "--width", "56",
                       "--height", "42"])
    return status, output


def test_demo_succeeds_and_every_frame_comes_out_with_its_stamp(demo_run):
    status, output = demo_run
    assert status == 0
    summary = json.loads((output / "summary.json").read_text())
    assert summary["frames_in"] == summary["frames_out"] == FRAMES and summary["stamps_match"]
    assert summary["save_map_ok"] and summary["keyframes"] == FRAMES - 8
    for topic in ("/depth/image", "/depth/camera_info", "/depth/confidence", "/points", "/odometry", "/path"):
        assert summary["topic_counts"][topic] == FRAMES, topic
    assert summary["topic_counts"]["/map/points"] >= 1


def test_demo_receives_the_camera_pose_on_tf_with_every_stamp(demo_run):
    pytest.importorskip("tf2_msgs", reason="tf2_msgs is not importable (`make setup` builds it: interfaces/)")
    _, output = demo_run
    summary = json.loads((output / "summary.json").read_text())
    # The default tree of a camera nothing else publishes frames for (docs/node.md, "Frames and TF").
    assert summary["tf_links"] == ["map -> odom", "odom -> camera_optical_frame"]
    assert summary["tf_stamps_match"]
    with AnyReader([output / "output_bag"], default_typestore=TYPESTORE) as reader:
        recorded = [(timestamp, reader.deserialize(raw, connection.msgtype)) for connection, timestamp, raw
                    in reader.messages() if connection.topic == "/tf"]
    assert [stamp for stamp, _ in recorded] == [START_NS + round(i * 1e8) for i in range(FRAMES)]
    transforms = recorded[-1][1].transforms
    assert [(t.header.frame_id, t.child_frame_id) for t in transforms] == [
        ("odom", "camera_optical_frame"), ("map", "odom")]


def test_demo_input_bag_is_the_synthetic_sequence(demo_run):
    _, output = demo_run
    frames = list(open_frames(output / "input_bag"))
    assert len(frames) == FRAMES and frames[0].image.shape == (42, 56, 3)
    assert frames[0].stamp_ns == START_NS and frames[0].frame_id == "camera_optical_frame"


def test_demo_records_the_outputs_and_saves_map_and_trajectory(demo_run):
    _, output = demo_run
    with AnyReader([output / "output_bag"], default_typestore=TYPESTORE) as reader:
        odometry = [recorded for connection, recorded, _ in reader.messages()
                    if connection.topic == "/odometry"]
    stamps, poses = read_tum(output / "trajectory.tum")
    assert sorted(odometry) == stamps == [START_NS + round(i * 1e8) for i in range(FRAMES)]
    assert poses.shape == (FRAMES, 4, 4)
    xyz, _ = read_ply(output / "map.ply")
    assert len(xyz) > 0
