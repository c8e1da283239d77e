"""TF content without tf2: which transforms, their frames, stamps and values, and the world frame."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from gct_stream_ros.ros.odom_frame import OdomFrame  # noqa: E402
from gct_stream_ros.ros.options import NodeOptions  # noqa: E402
from gct_stream_ros.ros.tf import (  # noqa: E402
    TfBroadcaster,
    frame_transforms,
    matrix_from_transform,
)
from gct_stream_ros.ros.tf_listener import TfListener  # noqa: E402
from gct_stream_ros.ros.tf_tree import TfTree  # noqa: E402
from gct_stream_ros.ros.world_frame import OPTICAL_TO_BODY, WorldFrame, tracked_pose  # noqa: E402
from gct_stream_ros.settings import resolve  # noqa: E402

TINY = {"model.preset": "tiny", "model.checkpoint": ""}
CAMERA_ONLY = {"tf.publish_map_to_camera": True, "tf.publish_odom_to_base": False,
               "tf.publish_map_to_odom": False}


def _options(overrides: dict | None = None) -> NodeOptions:
    return NodeOptions.from_values(resolve({**TINY, **(overrides or {})}))


def _transforms(options: NodeOptions, camera_frame: str, world: WorldFrame, pose: np.ndarray, stamp_ns: int,
                odom: OdomFrame | None = None):
    tracked = tracked_pose(world, odom or OdomFrame(), pose, camera_frame, stamp_ns)
    return frame_transforms(options.frames, options.tf, camera_frame, world, pose, tracked, stamp_ns)


def _edges(transforms) -> list[tuple[str, str]]:
    return [(t.header.frame_id, t.child_frame_id) for t in transforms]


def _pose(yaw_deg: float, translation: tuple[float, float, float]) -> np.ndarray:
    """A camera-to-world pose turning about the optical y axis (down), i.e. a pan."""
    angle = np.radians(yaw_deg)
    pose = np.eye(4)
    pose[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    pose[:3, 3] = translation
    return pose


def test_camera_only_setup_publishes_map_to_camera():
    options = _options(CAMERA_ONLY)
    transforms = _transforms(options, "cam_optical", WorldFrame(), _pose(0, (0, 0, 1)), 42)
    assert _edges(transforms) == [("map", "cam_optical")]
    transform = transforms[0]
    assert (transform.header.stamp.sec, transform.header.stamp.nanosec) == (0, 42)
    # One unit forward along the optical z axis is one unit along the map's x axis (REP-103).
    t = transform.transform.translation
    np.testing.assert_allclose([t.x, t.y, t.z], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(matrix_from_transform(transform), OPTICAL_TO_BODY @ _pose(0, (0, 0, 1)),
                               atol=1e-12)


def test_first_frame_camera_looks_along_map_x():
    transform = _transforms(_options(CAMERA_ONLY), "cam", WorldFrame(), np.eye(4), 0)[0]
    matrix = matrix_from_transform(transform)
    np.testing.assert_allclose(matrix[:3, 2], [1, 0, 0], atol=1e-12)  # optical z -> map x
    np.testing.assert_allclose(matrix[:3, 1], [0, 0, -1], atol=1e-12)  # optical y (down) -> map -z


def test_default_robot_tree_is_map_odom_base_through_the_mount():
    options = _options({"frames.base": "base"})
    mount = OPTICAL_TO_BODY.copy()
    mount[:3, 3] = (0.2, 0.0, 0.5)  # camera 20 cm ahead of and 50 cm above the base
    world = WorldFrame(mount, "base")
    pose = _pose(30, (0.1, 0.0, 1.0))
    transforms = _transforms(options, "cam", world, pose, 7)
    assert _edges(transforms) == [("odom", "base"), ("map", "odom")]
    base = matrix_from_transform(transforms[0])
    # The base seen from odom, composed with the mount, gives the camera seen from odom.
    np.testing.assert_allclose(base @ mount, mount @ pose, atol=1e-9)
    np.testing.assert_allclose(matrix_from_transform(transforms[1]), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(matrix_from_transform(_transforms(options, "cam", world, np.eye(4), 0)[0]),
                               np.eye(4), atol=1e-12)  # the base starts at the odom origin


def test_default_bare_camera_tree_tracks_the_camera_levelled():
    transforms = _transforms(_options(), "cam", WorldFrame(), _pose(0, (0, 0, 1)), 0)
    assert _edges(transforms) == [("odom", "cam"), ("map", "odom")]
    np.testing.assert_allclose(matrix_from_transform(transforms[0]), OPTICAL_TO_BODY @ _pose(0, (0, 0, 1)),
                               atol=1e-12)


def test_a_new_sequence_moves_map_to_odom_not_odom_to_base():
    options, odom = _options(), OdomFrame()
    before = _transforms(options, "cam", WorldFrame(), _pose(0, (0, 0, 1)), 1, odom)
    odom.start_sequence()
    after = _transforms(options, "cam", WorldFrame(), np.eye(4), 2, odom)  # the new world starts here
    np.testing.assert_allclose(matrix_from_transform(after[0]), matrix_from_transform(before[0]), atol=1e-12)
    np.testing.assert_allclose(matrix_from_transform(after[1])[:3, 3], [-1, 0, 0], atol=1e-12)


def test_a_revision_does_not_move_odom():
    odom = OdomFrame()
    tracked_pose(WorldFrame(), odom, np.eye(4), "cam", 1)
    revised = tracked_pose(WorldFrame(), odom, _pose(0, (0, 0, 1)), "cam", 1, first_estimate=False)
    np.testing.assert_allclose(revised.in_odom[:3, 3], [1, 0, 0], atol=1e-12)
    assert not odom.twist.linear.any()


def test_quaternions_are_unit_even_for_noisy_rotations():
    pose = _pose(10, (0, 0, 0))
    pose[:3, :3] *= 1.02
    rotation = _transforms(_options(), "cam", WorldFrame(), pose, 0)[0].transform.rotation
    assert np.isclose(np.linalg.norm([rotation.x, rotation.y, rotation.z, rotation.w]), 1.0)


def test_tracked_frame_is_the_mount_frame_or_the_camera():
    pose = _pose(0, (0, 0, 1))
    assert tracked_pose(WorldFrame(), OdomFrame(), pose, "cam", 0).child_frame == "cam"
    tracked = tracked_pose(WorldFrame(OPTICAL_TO_BODY, "camera_link"), OdomFrame(), pose, "cam", 0)
    assert tracked.child_frame == "camera_link"
    np.testing.assert_allclose(tracked.in_world[:3, 3], [1, 0, 0], atol=1e-12)
    with pytest.raises(ValueError, match="mount"):
        WorldFrame(OPTICAL_TO_BODY)


def test_no_transforms_when_every_switch_is_off():
    options = _options({"tf.publish_odom_to_base": False, "tf.publish_map_to_odom": False})
    assert _transforms(options, "cam", WorldFrame(), np.eye(4), 0) == []


class _LoggerStub:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, text: str) -> None:
        self.warnings.append(text)


class _NodeStub:
    """Just what the broadcaster and the TF listener touch when tf2 is missing."""

    def __init__(self) -> None:
        self.logger = _LoggerStub()

    def get_logger(self) -> _LoggerStub:
        return self.logger


def test_without_tf2_the_broadcaster_warns_once_and_sends_nothing(monkeypatch):
    for module in ("tf2_ros", "tf2_msgs", "tf2_msgs.msg"):
        monkeypatch.setitem(sys.modules, module, None)  # neither a ROS install nor the set-up's build
    node = _NodeStub()
    broadcaster = TfBroadcaster(node)
    transforms = _transforms(_options(), "cam", WorldFrame(), np.eye(4), 0)
    broadcaster.send(transforms)
    broadcaster.send(transforms)
    assert broadcaster.backend == "none" and not broadcaster.available
    assert len(node.logger.warnings) == 1 and "no TF is published" in node.logger.warnings[0]
    listener = TfListener(node, TfTree(), hear_tf=True)
    assert not listener.available and listener.topics == () and listener.lookup("base_link", "cam") is None
