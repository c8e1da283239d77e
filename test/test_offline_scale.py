"""gct_stream_offline with a metric scale: odometry and depth topics of the bag, and the fixed factor
applied to every topic and file.

The engine runs on the oracle network off by 0.37x (``scale_scene.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not importable (the offline tool builds ROS messages)")

from nav_msgs.msg import Odometry  # noqa: E402
from oracle_network import OracleNetwork  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from scale_scene import (  # noqa: E402
    WIDTH,
    drive,
    in_model_units,
    noisy_odometry,
    render,
    sensor_depth,
)
from sensor_msgs.msg import Image  # noqa: E402

from gct_stream_ros.mapping.ply import read_ply  # noqa: E402
from gct_stream_ros.mapping.tum import read_tum  # noqa: E402
from gct_stream_ros.ros import messages  # noqa: E402
from gct_stream_ros.settings import scale_options  # noqa: E402
from gct_stream_ros.tools.bag_sensors import BagScaleInputs  # noqa: E402
from gct_stream_ros.tools.camera_bag import image_cdr, write_camera_bag  # noqa: E402
from gct_stream_ros.tools.frame_source import TYPESTORE, open_frames  # noqa: E402
from gct_stream_ros.tools.offline import OfflineMapper, load_parameters, main  # noqa: E402
from gct_stream_ros.tools.output_bag import OutputBag  # noqa: E402

START_NS = 1_700_000_000_000_000_000
CAMERA_FRAME = "front_camera_optical"
ODOMETRY_TOPIC = "/wheel/odometry"
DEPTH_TOPIC = "/camera/aligned_depth/image"
PARAMETERS = ["model.preset:=tiny", "model.checkpoint:=", f"model.image_width:={WIDTH}", "model.device:=cpu",
              "model.num_scale_frames:=4", "window.overlap:=2", "output.points.decimation:=1"]


@pytest.fixture(scope="module")
def frames():
    return render(drive())


def _bag(path: Path, frames, odometry=None, depths=None) -> Path:
    with OutputBag(path) as bag:
        for index, frame in enumerate(frames):
            stamp = START_NS + frame.stamp_ns
            bag.write("/camera/image_raw", "sensor_msgs/msg/Image", stamp,
                      image_cdr(frame.image, stamp, CAMERA_FRAME))
            if odometry is not None:
                message = Odometry(header=messages.header(stamp, "odom"), child_frame_id="base_link")
                message.pose.pose = messages.pose(odometry[index])
                bag.write(ODOMETRY_TOPIC, "nav_msgs/msg/Odometry", stamp, serialize_message(message))
            if depths is not None:
                depth = depths[index].astype("<f4")
                image = Image(header=messages.header(stamp, CAMERA_FRAME), height=depth.shape[0],
                              width=depth.shape[1], encoding="32FC1", step=4 * depth.shape[1],
                              data=depth.tobytes())
                bag.write(DEPTH_TOPIC, "sensor_msgs/msg/Image", stamp, serialize_message(image))
    return path


def _run(output: Path, frames, bag: Path, extra=(), **inputs) -> OfflineMapper:
    values = load_parameters(None, [*PARAMETERS, *extra])
    network = OracleNetwork.for_synthetic([in_model_units(f) for f in frames], WIDTH)
    scale_inputs = BagScaleInputs(bag, scale_options(values), **inputs)
    mapper = OfflineMapper(values, output, network=network, scale_inputs=scale_inputs)
    mapper.run(open_frames(bag, "/camera/image_raw"), progress=False)
    return mapper


def _length(positions: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(positions, axis=0), axis=1).sum())


def test_odometry_topic_gives_a_metric_trajectory_as_long_as_the_odometry(tmp_path, frames):
    odometry = noisy_odometry(frames, np.random.default_rng(5), slip_every=None)
    bag = _bag(tmp_path / "input", frames, odometry=odometry)
    _run(tmp_path / "out", frames, bag, ["scale.source:=odometry", "scale.odometry.input:=topic"],
         odometry_topic=ODOMETRY_TOPIC)
    stamps, poses = read_tum(tmp_path / "out" / "trajectory.tum")
    assert stamps == [START_NS + f.stamp_ns for f in frames]  # every frame, held until the first estimate
    trajectory_length = _length(np.array([p[:3, 3] for p in poses]))
    odometry_length = _length(np.array([p[:3, 3] for p in odometry]))
    assert odometry_length == pytest.approx(2.1, rel=0.05)  # 42 frames of 5 cm
    assert trajectory_length == pytest.approx(odometry_length, rel=0.02)


def test_depth_topic_gives_metric_depth_images(tmp_path, frames):
    rng = np.random.default_rng(6)
    bag = _bag(tmp_path / "input", frames, depths=[sensor_depth(f, rng, upsample=1) for f in frames])
    _run(tmp_path / "out", frames, bag, ["scale.source:=depth"], depth_topic=DEPTH_TOPIC)
    depth = _read(tmp_path / "out" / "bag")["/depth/image"]
    for frame, message in zip(frames, depth):
        published = np.frombuffer(bytes(message.data), "<f4").reshape(frame.depth.shape)
        np.testing.assert_allclose(published, frame.depth, rtol=0.02)


def _read(path: Path) -> dict[str, list]:
    topics: dict[str, list] = {}
    with AnyReader([path], default_typestore=TYPESTORE) as reader:
        for connection, _, raw in reader.messages():
            topics.setdefault(connection.topic, []).append(reader.deserialize(raw, connection.msgtype))
    return topics


def _positions(topic: str, message) -> np.ndarray:
    if topic == "/tf":
        return np.array([[t.transform.translation.x, t.transform.translation.y, t.transform.translation.z]
                         for t in message.transforms])
    if topic == "/odometry":
        return np.array([[message.pose.pose.position.x, message.pose.pose.position.y,
                          message.pose.pose.position.z]])
    if topic == "/path":
        return np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in message.poses])
    if topic in ("/points", "/map/points"):
        return np.frombuffer(bytes(message.data), "<f4").reshape(-1, 4)[:, :3]
    if topic == "/depth/image":
        return np.frombuffer(bytes(message.data), "<f4")
    raise KeyError(topic)


def test_fixed_scales_every_topic_and_file_by_exactly_the_factor(tmp_path, frames):
    """A power of two, so that every product is exact; the unscaled run's voxels are the factor smaller,
    which makes it the same map."""
    frames = frames[:12]
    source = tmp_path / "input"
    write_camera_bag(source, [(START_NS + f.stamp_ns, f.image) for f in frames], frames[0].intrinsics,
                     frame_id=CAMERA_FRAME)
    _run(tmp_path / "none", frames, source, ["output.map.voxel_size:=0.025"])
    _run(tmp_path / "fixed", frames, source, ["scale.source:=fixed", "scale.factor:=2.0",
                                              "output.map.voxel_size:=0.05"])
    unscaled, scaled = _read(tmp_path / "none" / "bag"), _read(tmp_path / "fixed" / "bag")
    assert sorted(scaled) == sorted(unscaled)
    for topic in ("/tf", "/odometry", "/path", "/points", "/map/points", "/depth/image"):
        assert len(scaled[topic]) == len(unscaled[topic]) > 0
        for got, want in zip(scaled[topic], unscaled[topic]):
            np.testing.assert_array_equal(_positions(topic, got), 2.0 * _positions(topic, want),
                                          err_msg=topic)
    for got, want in zip(scaled["/depth/camera_info"], unscaled["/depth/camera_info"], strict=True):
        np.testing.assert_array_equal(got.k, want.k)
    for got, want in zip(scaled["/depth/confidence"], unscaled["/depth/confidence"], strict=True):
        assert bytes(got.data) == bytes(want.data)
    for got, want in zip(scaled["/odometry"], unscaled["/odometry"], strict=True):
        got_q, want_q = got.pose.pose.orientation, want.pose.pose.orientation
        assert (got_q.x, got_q.y, got_q.z, got_q.w) == (want_q.x, want_q.y, want_q.z, want_q.w)
    scaled_xyz, scaled_rgb = read_ply(tmp_path / "fixed" / "map.ply")
    unscaled_xyz, unscaled_rgb = read_ply(tmp_path / "none" / "map.ply")
    np.testing.assert_array_equal(scaled_xyz, 2.0 * unscaled_xyz)
    np.testing.assert_array_equal(scaled_rgb, unscaled_rgb)
    scaled_stamps, scaled_poses = read_tum(tmp_path / "fixed" / "trajectory.tum")
    unscaled_stamps, unscaled_poses = read_tum(tmp_path / "none" / "trajectory.tum")
    assert scaled_stamps == unscaled_stamps
    np.testing.assert_allclose([p[:3, 3] for p in scaled_poses], [2.0 * p[:3, 3] for p in unscaled_poses],
                               rtol=1e-8)  # the file's 9 significant digits
    np.testing.assert_array_equal([p[:3, :3] for p in scaled_poses], [p[:3, :3] for p in unscaled_poses])



def test_command_line_names_the_missing_topic(tmp_path, frames, capsys):
    bag = _bag(tmp_path / "input", frames[:2])
    arguments = [str(bag), "-o", str(tmp_path / "out"), "--quiet", *[f"-p={p}" for p in PARAMETERS]]
    assert main([*arguments, "-p=scale.source:=odometry"]) == 2
    assert "scale.source odometry needs --odometry-topic" in capsys.readouterr().err
    assert main([*arguments, "-p=scale.source:=depth", "--depth-topic", "/nothing"]) == 2
    assert "has no topic /nothing" in capsys.readouterr().err
