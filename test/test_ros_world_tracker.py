"""The world tracker: a new world frame per sequence and when a missing mount appears, odom going on; the
reason of a restart said once; transforms to a frame that has another parent held back (said once)."""

from __future__ import annotations

import numpy as np
import pytest
from ros_fixtures import fake_result, random_image

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from gct_stream_ros.ros import messages  # noqa: E402
from gct_stream_ros.ros.map_state import MapState  # noqa: E402
from gct_stream_ros.ros.mount import MountResolver  # noqa: E402
from gct_stream_ros.ros.options import NodeOptions  # noqa: E402
from gct_stream_ros.ros.tf_tree import TfTree  # noqa: E402
from gct_stream_ros.ros.world_tracker import WorldTracker  # noqa: E402
from gct_stream_ros.settings import resolve  # noqa: E402

OPTIONS = NodeOptions.from_values(resolve({"model.preset": "tiny", "model.checkpoint": "",
                                           "tf.mount_timeout": 0.0}))


class _Logger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, text: str, **_throttle: object) -> None:
        self.lines.append(("info", text))

    def warning(self, text: str, **_throttle: object) -> None:
        self.lines.append(("warning", text))

    def error(self, text: str, **_throttle: object) -> None:
        self.lines.append(("error", text))


def _tracker(mounts: dict[tuple[str, str], np.ndarray] | None = None,
             tree: TfTree | None = None) -> tuple[WorldTracker, MapState, _Logger]:
    known = {} if mounts is None else mounts
    tree = tree or TfTree()
    map_state = MapState(0.1, 100, 10)
    logger = _Logger()
    resolver = MountResolver(lambda target, source: known.get((target, source)), tree, timeout_s=0.0)
    return WorldTracker(resolver, tree, map_state, logger), map_state, logger


def _result(sequence: int = 0):
    return fake_result(0, 1, random_image(), sequence=sequence)


def test_a_new_sequence_is_a_new_world_with_its_reason_said_once():
    tracker, map_state, logger = _tracker()
    first = tracker.world_for(_result(), "cam", OPTIONS.frames, OPTIONS.tf)
    assert tracker.world_for(_result(), "cam", OPTIONS.frames, OPTIONS.tf) is first
    assert tracker.take_restart_reason() == ""
    map_state.add_frame(0, 1, np.eye(4), messages.pose_stamped(np.eye(4), 1, "map"), None)
    assert tracker.world_for(_result(sequence=1), "cam", OPTIONS.frames, OPTIONS.tf) is not first
    assert tracker.take_restart_reason() == "input size changed" and tracker.take_restart_reason() == ""
    assert map_state.path_length == 0
    tracker.restart("reset service")
    assert tracker.world is None and tracker.take_restart_reason() == "reset service"


def test_a_mount_that_appears_starts_a_new_world_tracking_the_base():
    mounts: dict[tuple[str, str], np.ndarray] = {}
    tracker, _, logger = _tracker(mounts)
    assert tracker.world_for(_result(), "cam", OPTIONS.frames, OPTIONS.tf).tracked_frame is None
    assert [level for level, _ in logger.lines] == ["warning"]
    mounts[("base_link", "cam")] = np.eye(4)
    world = tracker.world_for(_result(), "cam", OPTIONS.frames, OPTIONS.tf)
    assert world.tracked_frame == "base_link" and "found on TF" in logger.lines[-1][1]
    assert tracker.world_for(_result(), "cam", OPTIONS.frames, OPTIONS.tf) is world


def test_transforms_to_a_frame_with_another_parent_are_held_back_and_said_once():
    tree = TfTree()
    tree.add([("wheel_odom", "base_link")])
    tracker, _, logger = _tracker(tree=tree)
    transforms = [messages.transform_stamped(np.eye(4), 1, "odom", "base_link"),
                  messages.transform_stamped(np.eye(4), 1, "map", "odom")]
    for _ in range(2):
        kept = tracker.sendable(transforms, OPTIONS.tf)
        assert [(t.header.frame_id, t.child_frame_id) for t in kept] == [("map", "odom")]
    errors = [text for level, text in logger.lines if level == "error"]
    assert len(errors) == 1 and "wheel_odom" in errors[0]
