"""gct_stream_offline on generated inputs: the output bag, map, trajectory and stats agree with the engine.

The engine runs on the oracle network (exact synthetic geometry), so poses and points can be
checked against the truth; one test runs the command line with the tiny random model.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not importable (the offline tool builds ROS messages)")

from oracle_network import OracleNetwork  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from rosbags.interfaces import QosDurability, QosReliability  # noqa: E402

from gct_stream_ros.mapping.ply import read_ply  # noqa: E402
from gct_stream_ros.mapping.tum import read_tum  # noqa: E402
from gct_stream_ros.ros.world_frame import OPTICAL_TO_BODY  # noqa: E402
from gct_stream_ros.stream.frame_assembly import DeferredResult  # noqa: E402
from gct_stream_ros.stream.synthetic import ROOM_MAX, ROOM_MIN, SyntheticScene  # noqa: E402
from gct_stream_ros.tools import stage_times as stage  # noqa: E402
from gct_stream_ros.tools.camera_bag import write_camera_bag  # noqa: E402
from gct_stream_ros.tools.frame_source import TYPESTORE, open_frames  # noqa: E402
from gct_stream_ros.tools.offline import BagResultWriter, OfflineMapper, load_parameters, main  # noqa: E402

WIDTH, HEIGHT = 56, 42
FRAMES = 12
START_NS = 1_700_000_000_000_000_000
CAMERA_FRAME = "front_camera_optical"
VOXEL = 0.05
PARAMETERS = ["model.preset:=tiny", "model.checkpoint:=", f"model.image_width:={WIDTH}", "model.device:=cpu",
              "model.num_scale_frames:=4", "window.overlap:=2", "output.points.decimation:=1",
              f"output.map.voxel_size:={VOXEL}"]


@pytest.fixture(scope="module")
def scene_frames():
    return SyntheticScene(0).render_sequence(FRAMES, WIDTH, HEIGHT)


def _stamps(frames) -> list[int]:
    return [START_NS + f.stamp_ns for f in frames]


def _bag(path: Path, frames, storage: str = "mcap") -> Path:
    write_camera_bag(path, zip(_stamps(frames), (f.image for f in frames)), frames[0].intrinsics,
                     storage=storage, frame_id=CAMERA_FRAME)
    return path


def _run(tmp_path, frames, source_path, extra=(), **network_options):
    values = load_parameters(None, [*PARAMETERS, *extra])
    network = OracleNetwork.for_synthetic(frames, WIDTH, **network_options)
    output = tmp_path / "out"
    mapper = OfflineMapper(values, output, network=network, stats_path=output / "stats.jsonl")
    summary = mapper.run(open_frames(source_path), progress=False)
    return mapper, summary


def _read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    topics: dict[str, list[tuple[int, object]]] = {}
    with AnyReader([path], default_typestore=TYPESTORE) as reader:
        for connection, recorded, raw in reader.messages():
            message = reader.deserialize(raw, connection.msgtype)
            topics.setdefault(connection.topic, []).append((recorded, message))
    return topics


def _truth_in_map(frames, sim3=None) -> list[np.ndarray]:
    """Poses the engine must report, in the published map frame (the first camera, body axes),
    after the oracle's similarity ``sim3`` of the first window when it has one."""
    first_w2c = np.linalg.inv(frames[0].c2w)
    poses = []
    for frame in frames:
        pose = first_w2c @ frame.c2w
        if sim3 is not None:
            pose[:3, :3] = sim3.rotation @ pose[:3, :3]
            pose[:3, 3] = sim3.scale * sim3.rotation @ pose[:3, 3] + sim3.translation
        poses.append(OPTICAL_TO_BODY @ pose)
    return poses


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_input_gives_one_tf_message_and_one_of_each_output_per_frame(tmp_path, scene_frames, storage):
    source = _bag(tmp_path / "input", scene_frames, storage)
    _, summary = _run(tmp_path, scene_frames, source)
    assert summary.frames == FRAMES
    output = _read_bag(tmp_path / "out" / "bag")
    assert (tmp_path / "out" / "bag" / "metadata.yaml").is_file()
    assert next((tmp_path / "out" / "bag").glob("*.mcap")).is_file()
    tf = output["/tf"]
    # The node's default tree without a robot: map -> odom -> the camera (docs/node.md, "Frames and TF").
    assert [[(t.header.frame_id, t.child_frame_id) for t in message.transforms] for _, message in tf] == [
        [("odom", CAMERA_FRAME), ("map", "odom")]] * FRAMES
    for transform_index in (0, 1):
        transforms = [message.transforms[transform_index] for _, message in tf]
        stamps = [t.header.stamp.sec * 10**9 + t.header.stamp.nanosec for t in transforms]
        assert stamps == _stamps(scene_frames) == [recorded for recorded, _ in tf]
    for topic in ("/depth/image", "/depth/confidence", "/depth/camera_info", "/points", "/odometry", "/path"):
        assert len(output[topic]) == FRAMES, topic
    assert len(output["/map/points"]) == 1 and output["/map/points"][0][0] == _stamps(scene_frames)[-1]
    depth = output["/depth/image"][0][1]
    assert (depth.encoding, depth.height, depth.width, depth.header.frame_id) == ("32FC1", HEIGHT, WIDTH,
                                                                                   CAMERA_FRAME)
    assert len(output["/path"][-1][1].poses) == FRAMES


def test_trajectory_and_odometry_agree_with_the_truth(tmp_path, scene_frames):
    _run(tmp_path, scene_frames, _bag(tmp_path / "input", scene_frames))
    stamps, poses = read_tum(tmp_path / "out" / "trajectory.tum")
    assert stamps == _stamps(scene_frames)
    np.testing.assert_allclose(poses, _truth_in_map(scene_frames), atol=2e-4)
    odometry = [m for _, m in _read_bag(tmp_path / "out" / "bag")["/odometry"]]
    positions = [[m.pose.pose.position.x, m.pose.pose.position.y, m.pose.pose.position.z] for m in odometry]
    np.testing.assert_allclose(positions, [p[:3, 3] for p in _truth_in_map(scene_frames)], atol=2e-4)


def _distance_to_scene(points_world: np.ndarray, scene: SyntheticScene) -> np.ndarray:
    inside_room = np.minimum(points_world - ROOM_MIN, ROOM_MAX - points_world).min(axis=1)
    distances = [np.abs(inside_room)]
    for low, high in scene.boxes:
        outside = np.maximum(np.maximum(low - points_world, points_world - high), 0.0)
        distances.append(np.linalg.norm(outside, axis=1))
    return np.min(distances, axis=0)


def test_fused_map_lies_on_the_scene_surfaces(tmp_path, scene_frames):
    _run(tmp_path, scene_frames, _bag(tmp_path / "input", scene_frames))
    xyz, rgb = read_ply(tmp_path / "out" / "map.ply")
    assert len(xyz) > 100 and rgb.shape == xyz.shape
    map_to_world = scene_frames[0].c2w @ np.linalg.inv(OPTICAL_TO_BODY)
    world = xyz.astype(np.float64) @ map_to_world[:3, :3].T + map_to_world[:3, 3]
    distance = _distance_to_scene(world, SyntheticScene(0))
    # Voxel means of planar patches stay on their plane; only edge voxels mix two surfaces.
    assert np.median(distance) < 1e-3 and np.quantile(distance, 0.9) < VOXEL


def test_stats_file_has_one_line_per_frame_in_order(tmp_path, scene_frames):
    _run(tmp_path, scene_frames, _bag(tmp_path / "input", scene_frames))
    lines = [json.loads(line) for line in (tmp_path / "out" / "stats.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(FRAMES))
    assert {"index", "stamp", "keyframe", "frame_type", "window", "cached_tokens", "cached_bytes",
            "camera_cached_bytes", "step_ms"} <= set(lines[0])
    expected_stamps = [s / 1e9 for s in _stamps(scene_frames)]
    assert [line["stamp"] for line in lines] == pytest.approx(expected_stamps, abs=1e-6)
    assert [line["frame_type"] for line in lines[:5]] == ["scale"] * 4 + ["keyframe"]
    assert all(line["keyframe"] and line["window"] == 0 and line["step_ms"] > 0 for line in lines)


def test_windows_revisions_are_applied_once_per_frame(tmp_path, scene_frames):
    source = _bag(tmp_path / "input", scene_frames)
    mapper, summary = _run(tmp_path, scene_frames, source, ["window.mode:=online", "window.size:=6"],
                           window_sim3_seed=3)
    assert summary.revisions > 0
    output = _read_bag(tmp_path / "out" / "bag")
    assert sorted(recorded for recorded, _ in output["/tf"]) == _stamps(scene_frames)
    assert len(output["/depth/image"]) == FRAMES
    _, poses = read_tum(tmp_path / "out" / "trajectory.tum")
    # Windows are aligned by Sim(3) into the first one, whose own similarity the oracle chose.
    # sequence_sim3[0] belongs to the oracle's own reset at construction, [1] to the session's first.
    expected = _truth_in_map(scene_frames, mapper.session.network.sequence_sim3[1])
    np.testing.assert_allclose(poses, expected, atol=1e-3)
    lines = (tmp_path / "out" / "stats.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(FRAMES))
    assert max(json.loads(line)["window"] for line in lines) >= 1


def test_image_folder_is_stamped_by_fps(tmp_path, scene_frames):
    folder = tmp_path / "images"
    folder.mkdir()
    for frame in scene_frames:
        bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"frame_{frame.index:04d}.png"), bgr)
    values = load_parameters(None, PARAMETERS)
    mapper = OfflineMapper(values, tmp_path / "out", network=OracleNetwork.for_synthetic(scene_frames, WIDTH))
    mapper.run(open_frames(folder, fps=5.0, start_ns=START_NS), progress=False)
    stamps, poses = read_tum(tmp_path / "out" / "trajectory.tum")
    assert stamps == [START_NS + i * 200_000_000 for i in range(FRAMES)]
    np.testing.assert_allclose(poses, _truth_in_map(scene_frames), atol=2e-4)
    transforms = [m.transforms[0] for _, m in _read_bag(tmp_path / "out" / "bag")["/tf"]]
    assert {t.child_frame_id for t in transforms} == {"camera_optical_frame"}


TINY_CLI = ["-p", "model.preset:=tiny", "-p", "model.checkpoint:=", "-p", f"model.image_width:={WIDTH}",
            "-p", "model.num_scale_frames:=4", "-p", "window.overlap:=2", "--quiet"]


def test_video_file_runs_through_the_command_line_with_the_tiny_model(tmp_path, scene_frames, capsys):
    video = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (WIDTH, HEIGHT))
    for frame in scene_frames:
        writer.write(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
    writer.release()
    assert main([str(video), "-o", str(tmp_path / "out"), "--stats", str(tmp_path / "stats.jsonl"),
                 "--start-time", "1700000000.000000001", *TINY_CLI]) == 0
    out = capsys.readouterr().out
    assert f"{FRAMES} frames" in out and "frames/s" in out and "main thread besides the step" in out
    # one row per stage in the summary (docs/tools.md, "Time per stage")
    assert [line[4:15].strip() for line in out.splitlines() if line.startswith("    ")] == list(stage.STAGES)
    stamps, _ = read_tum(tmp_path / "out" / "trajectory.tum")
    assert stamps == [1_700_000_000_000_000_001 + i * 200_000_000 for i in range(FRAMES)]
    assert len(_read_bag(tmp_path / "out" / "bag")["/tf"]) == FRAMES
    assert len((tmp_path / "stats.jsonl").read_text().splitlines()) == FRAMES


def test_params_file_and_assignments_combine_with_assignments_last(tmp_path, scene_frames):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    output:\n      points: {decimation: 7, frame: map}\n"
                      "      depth: {encoding: 16UC1}\n")
    values = load_parameters(params, [*PARAMETERS, "output.points.decimation:=3"])
    mapper = OfflineMapper(values, tmp_path / "out", network=OracleNetwork.for_synthetic(scene_frames, WIDTH))
    mapper.run(open_frames(_bag(tmp_path / "input", scene_frames)), progress=False)
    output = _read_bag(tmp_path / "out" / "bag")
    assert output["/depth/image"][0][1].encoding == "16UC1"
    cloud = output["/points"][0][1]
    assert cloud.header.frame_id == "map"
    assert cloud.width == len(range(0, WIDTH, 3)) * len(range(0, HEIGHT, 3))


def test_each_topic_records_the_qos_the_node_offers(tmp_path, scene_frames):
    _run(tmp_path, scene_frames, _bag(tmp_path / "input", scene_frames), extra=["output.qos:=best_effort"])
    with AnyReader([tmp_path / "out" / "bag"], default_typestore=TYPESTORE) as reader:
        offered = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
    (latched,) = offered["/map/points"]
    assert (latched.durability, latched.reliability, latched.depth) == (
        QosDurability.TRANSIENT_LOCAL, QosReliability.RELIABLE, 1)
    (tf,) = offered["/tf"]
    assert (tf.durability, tf.reliability, tf.depth) == (QosDurability.VOLATILE, QosReliability.RELIABLE, 100)
    for topic in ("/depth/image", "/points", "/odometry", "/path"):
        (per_frame,) = offered[topic]
        assert (per_frame.durability, per_frame.reliability) == (QosDurability.VOLATILE,
                                                                 QosReliability.BEST_EFFORT), topic


def test_summary_times_every_stage_of_every_frame(tmp_path, scene_frames):
    _, summary = _run(tmp_path, scene_frames, _bag(tmp_path / "input", scene_frames))
    samples = summary.times.samples
    assert set(samples) == set(stage.STAGES)
    # Read and prepared once per input frame; one step per push that ran the network (the scale phase
    # once for its 4 frames, then one per frame); one assembly per result; written once per frame.
    for name in (stage.DECODE, stage.PREPROCESS, stage.INPUT_WAIT):
        assert len(samples[name]) == FRAMES, name
    assert len(samples[stage.STEP]) == FRAMES - 4 + 1
    assert len(samples[stage.RESULT]) == FRAMES
    for name in (stage.OUTPUT_WAIT, stage.MESSAGES, stage.BAG_WRITE):
        assert len(samples[name]) == FRAMES, name
    assert len(summary.times.frame_periods_ms) == FRAMES - 4 + 1
    # every push here ran the network (the last four each joined or ran the scale phase)
    besides_step = np.subtract(summary.times.frame_periods_ms, samples[stage.STEP])
    np.testing.assert_allclose(summary.times.between_steps_ms, besides_step)
    assert summary.times.main_thread_ms() == pytest.approx(np.median(besides_step))
    for name in stage.STAGES:
        assert all(ms >= 0.0 for ms in samples[name]), name
    for name in (stage.DECODE, stage.PREPROCESS, stage.STEP, stage.RESULT, stage.MESSAGES, stage.BAG_WRITE):
        assert summary.times.per_frame_ms(name, FRAMES) > 0.0, name



def _offline_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("gct_stream_offline")]


def test_results_are_assembled_beside_the_step_in_push_order(tmp_path, scene_frames, monkeypatch):
    assembled = []
    assemble = DeferredResult.assemble

    def recording(self):
        assembled.append((threading.current_thread().name, self.frame.index, self.frame.revision))
        return assemble(self)

    monkeypatch.setattr(DeferredResult, "assemble", recording)
    _, summary = _run(tmp_path, scene_frames, _bag(tmp_path / "input", scene_frames),
                      ["window.mode:=online", "window.size:=6"], window_sim3_seed=3)
    assert {name for name, _, _ in assembled} == {"gct_stream_offline results"}
    assert [index for _, index, revision in assembled if not revision] == list(range(FRAMES))
    assert summary.revisions == sum(revision for _, _, revision in assembled) > 0
    assert not _offline_threads()


@pytest.mark.parametrize("failing", ["assembly", "writer"])
def test_an_error_beside_the_step_ends_the_run_with_it_and_stops_every_thread(tmp_path, scene_frames,
                                                                             monkeypatch, failing):
    """An error on the results thread, or on the writer (raised on the results thread at its next hand-over),
    reaches the main thread as itself; the frames before it are in the bag, which is closed."""
    assemble, write = DeferredResult.assemble, BagResultWriter.write

    def failing_assemble(self):
        if self.frame.index == 6:
            raise RuntimeError("assembly failed at frame 6")
        return assemble(self)

    def failing_write(self, result, camera_frame):
        if result.index == 6:
            raise RuntimeError("writer failed at frame 6")
        write(self, result, camera_frame)

    if failing == "assembly":
        monkeypatch.setattr(DeferredResult, "assemble", failing_assemble)
    else:
        monkeypatch.setattr(BagResultWriter, "write", failing_write)
    with pytest.raises(RuntimeError, match=f"^{failing} failed at frame 6$"):
        _run(tmp_path, scene_frames, _bag(tmp_path / "input", scene_frames))
    assert not _offline_threads()
    written = [recorded for recorded, _ in _read_bag(tmp_path / "out" / "bag")["/tf"]]
    assert written == _stamps(scene_frames)[:6]
