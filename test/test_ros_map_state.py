"""The map state: frames in frame order (late ones placed), bounded path and trajectory, saving, restarts."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from gct_stream_ros.mapping.ply import read_ply  # noqa: E402
from gct_stream_ros.mapping.tum import read_tum  # noqa: E402
from gct_stream_ros.ros import messages  # noqa: E402
from gct_stream_ros.ros.map_state import MapState  # noqa: E402


def _add(state: MapState, index: int, points: bool = False) -> None:
    pose = np.eye(4)
    pose[0, 3] = index
    cloud = (np.full((1, 3), float(index), np.float32), np.zeros((1, 3), np.uint8)) if points else None
    state.add_frame(index, 100 + index, pose, messages.pose_stamped(pose, 100 + index, "map"), cloud)


def _path_stamps(state: MapState) -> list[int]:
    return [messages.to_nanoseconds(p.header.stamp) for p in state.path()]


def test_late_frames_take_their_place_and_the_oldest_go_first():
    state = MapState(0.1, 100, path_length=3, trajectory_limit=4)
    for index in (0, 1, 3, 4, 2):  # frame 2 became final late (a window overlap)
        _add(state, index)
    assert [s for s, _ in state.trajectory()] == [101, 102, 103, 104]
    assert _path_stamps(state) == [102, 103, 104]
    _add(state, 0)  # older than everything a full path keeps
    assert _path_stamps(state) == [102, 103, 104]


def test_keyframe_points_change_the_map_once(tmp_path):
    state = MapState(0.1, 100, path_length=10)
    _add(state, 0)
    assert state.changed_map() is None
    _add(state, 1, points=True)
    xyz, _, stamp = state.changed_map()
    assert len(xyz) == 1 and stamp == 101 and state.changed_map() is None
    saved = state.save(tmp_path)
    assert (saved.points, saved.poses) == (1, 2)
    assert len(read_ply(saved.map_path)[0]) == 1 and read_tum(saved.trajectory_path)[0] == [100, 101]


def test_clear_keeps_the_path_restart_clears_everything_reconfigure_restarts_the_map():
    state = MapState(0.1, 100, path_length=10)
    _add(state, 0, points=True)
    state.clear_map()
    assert len(state) == 0 and state.trajectory() == [] and state.path_length == 1
    _add(state, 1, points=True)  # a step of the cleared world frame, still in flight during the clear
    assert (len(state), state.poses, state.path_length) == (0, 0, 1)
    state.restart()
    assert state.path_length == 0
    _add(state, 1, points=True)
    assert (len(state), state.poses, state.path_length) == (1, 1, 1)
    assert not state.reconfigure(0.1, 100, path_length=5) and len(state) == 1
    assert state.reconfigure(0.5, 100, path_length=5) and len(state) == 0 and state.voxel_size == 0.5
