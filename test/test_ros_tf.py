"""TF content without tf2: which transforms, their frames, stamps and values, and the world frame."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from gct_stream_ros.ros.options import NodeOptions  # noqa: E402
from gct_stream_ros.ros.tf import (  # noqa: E402
    MountLookup,
    TfBroadcaster,
    frame_transforms,
    matrix_from_transform,
)
from gct_stream_ros.ros.world_frame import OPTICAL_TO_BODY, WorldFrame, tracked_pose  # noqa: E402
from gct_stream_ros.settings import resolve  # noqa: E402

TINY = {"model.preset": "tiny", "model.checkpoint": ""}


def _options(overrides: dict | None = None) -> NodeOptions:
    return NodeOptions.from_values(resolve({**TINY, **(overrides or {})}))


def _transforms(options: NodeOptions, camera_frame: str, world: WorldFrame, pose: np.ndarray, stamp_ns: int):
    return frame_transforms(options.frames, options.tf, camera_frame, world, pose, stamp_ns)


def _pose(yaw_deg: float, translation: tuple[float, float, float]) -> np.ndarray:
    """A camera-to-world pose turning about the optical y axis (down), i.e. a pan."""
    angle = np.radians(yaw_deg)
    pose = np.eye(4)
    pose[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    pose[:3, 3] = translation
    return pose


def test_camera_only_setup_publishes_map_to_camera():
    options = _options()
    transforms = _transforms(options, "cam_optical", WorldFrame(), _pose(0, (0, 0, 1)), 42)
    assert [(t.header.frame_id, t.child_frame_id) for t in transforms] == [("map", "cam_optical")]
    transform = transforms[0]
    assert (transform.header.stamp.sec, transform.header.stamp.nanosec) == (0, 42)
    # One unit forward along the optical z axis is one unit along the map's x axis (REP-103).
    t = transform.transform.translation
    np.testing.assert_allclose([t.x, t.y, t.z], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(matrix_from_transform(transform), OPTICAL_TO_BODY @ _pose(0, (0, 0, 1)),
                               atol=1e-12)


def test_first_frame_camera_looks_along_map_x():
    transform = _transforms(_options(), "cam", WorldFrame(), np.eye(4), 0)[0]
    matrix = matrix_from_transform(transform)
    np.testing.assert_allclose(matrix[:3, 2], [1, 0, 0], atol=1e-12)  # optical z -> map x
    np.testing.assert_allclose(matrix[:3, 1], [0, 0, -1], atol=1e-12)  # optical y (down) -> map -z


def test_robot_setup_publishes_odom_to_base_through_the_mount():
    options = _options({"tf.publish_map_to_camera": False, "tf.publish_odom_to_base": True,
                      "tf.publish_map_to_odom": True, "frames.base": "base", "frames.odom": "odom"})
    mount = OPTICAL_TO_BODY.copy()
    mount[:3, 3] = (0.2, 0.0, 0.5)  # camera 20 cm ahead of and 50 cm above the base
    world = WorldFrame(mount)
    pose = _pose(30, (0.1, 0.0, 1.0))
    transforms = _transforms(options, "cam", world, pose, 7)
    assert [(t.header.frame_id, t.child_frame_id) for t in transforms] == [("odom", "base"), ("map", "odom")]
    base = matrix_from_transform(transforms[0])
    # The base seen from odom, composed with the mount, gives the camera seen from odom.
    np.testing.assert_allclose(base @ mount, mount @ pose, atol=1e-9)
    np.testing.assert_allclose(matrix_from_transform(transforms[1]), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(matrix_from_transform(_transforms(options, "cam", world, np.eye(4), 0)[0]),
                               np.eye(4), atol=1e-12)  # the base starts at the odom origin


def test_quaternions_are_unit_even_for_noisy_rotations():
    pose = _pose(10, (0, 0, 0))
    pose[:3, :3] *= 1.02
    rotation = _transforms(_options(), "cam", WorldFrame(), pose, 0)[0].transform.rotation
    assert np.isclose(np.linalg.norm([rotation.x, rotation.y, rotation.z, rotation.w]), 1.0)


def test_world_frame_and_tracked_frame_follow_the_tf_mode():
    camera_only = _options()
    robot = _options({"tf.publish_map_to_camera": False, "tf.publish_odom_to_base": True})
    assert camera_only.world_frame == "map" and robot.world_frame == "odom"
    pose = _pose(0, (0, 0, 1))
    assert tracked_pose(camera_only.frames, camera_only.tf, WorldFrame(), pose, "cam")[0] == "cam"
    child, matrix = tracked_pose(robot.frames, robot.tf, WorldFrame(), pose, "cam")
    assert child == "base_link"
    np.testing.assert_allclose(matrix[:3, 3], [1, 0, 0], atol=1e-12)


def test_no_transforms_when_every_switch_is_off():
    options = _options({"tf.publish_map_to_camera": False})
    assert _transforms(options, "cam", WorldFrame(), np.eye(4), 0) == []


class _LoggerStub:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, text: str) -> None:
        self.warnings.append(text)


class _NodeStub:
    """Just what the broadcaster and the mount lookup touch when tf2 is missing."""

    def __init__(self) -> None:
        self.logger = _LoggerStub()

    def get_logger(self) -> _LoggerStub:
        return self.logger


def test_without_tf2_the_broadcaster_warns_once_and_sends_nothing():
    try:
        import tf2_ros  # noqa: F401
        pytest.skip("tf2_ros is importable here: the fallback is not used")
    except ImportError:
        pass
    try:
        import tf2_msgs.msg  # noqa: F401
        pytest.skip("tf2_msgs is importable here: /tf is published directly (the stub cannot publish)")
    except ImportError:
        pass
    node = _NodeStub()
    broadcaster = TfBroadcaster(node)
    transforms = _transforms(_options(), "cam", WorldFrame(), np.eye(4), 0)
    broadcaster.send(transforms)
    broadcaster.send(transforms)
    assert broadcaster.backend == "none" and not broadcaster.available
    assert len(node.logger.warnings) == 1 and "no TF is published" in node.logger.warnings[0]
    lookup = MountLookup(node)
    assert not lookup.available and lookup.lookup("base_link", "cam") is None
