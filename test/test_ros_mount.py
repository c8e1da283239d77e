"""The camera mount: waited for once, then the camera tree's root assumed and the mount retried."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from gct_stream_ros.ros.mount import MountResolver  # noqa: E402
from gct_stream_ros.ros.tf_tree import TfTree  # noqa: E402


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _mount(x: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[0, 3] = x
    return matrix


def test_the_mount_is_waited_for_until_it_appears():
    clock = _Clock()
    known: dict[tuple[str, str], np.ndarray] = {}

    def lookup(target: str, source: str):
        if clock.now >= 0.5:  # the robot description comes up half a second late
            known[("base_link", "cam")] = _mount(0.2)
        return known.get((target, source))

    resolver = MountResolver(lookup, TfTree(), timeout_s=2.0, clock=clock, sleep=clock.sleep)
    mount = resolver.resolve("base_link", "cam")
    assert mount.found and mount.tracked_frame == "base_link"
    np.testing.assert_allclose(mount.tracked_from_camera, _mount(0.2))
    assert 0.5 <= clock.now < 0.6 and resolver.waited


def test_without_a_mount_the_camera_tree_root_is_tracked_and_the_wait_happens_once():
    clock = _Clock()
    tree = TfTree()
    tree.add([("camera_link", "cam")])
    transforms = {("camera_link", "cam"): _mount(0.05)}
    resolver = MountResolver(lambda target, source: transforms.get((target, source)), tree, timeout_s=1.0,
                             clock=clock, sleep=clock.sleep)
    mount = resolver.resolve("base_link", "cam")
    assert not mount.found and mount.tracked_frame == "camera_link"
    np.testing.assert_allclose(mount.tracked_from_camera, _mount(0.05))
    assert 1.0 <= clock.now < 1.1
    waited_until = clock.now
    assert not resolver.resolve("base_link", "cam").found
    assert clock.now == waited_until  # retried without waiting again
    transforms[("base_link", "cam")] = _mount(0.3)
    assert resolver.resolve("base_link", "cam").tracked_frame == "base_link"


def test_a_bare_camera_is_its_own_tracked_frame():
    clock = _Clock()
    resolver = MountResolver(lambda target, source: None, TfTree(), timeout_s=0.0, clock=clock,
                             sleep=clock.sleep)
    mount = resolver.resolve("base_link", "cam")
    assert (mount.tracked_frame, mount.tracked_from_camera, mount.found) == ("cam", None, False)
    assert clock.now == 0.0


def test_a_cancelled_wait_ends_at_once():
    clock = _Clock()
    resolver = MountResolver(lambda target, source: None, TfTree(), timeout_s=10.0, clock=clock,
                             sleep=lambda seconds: (clock.sleep(seconds), resolver.cancel()))
    assert not resolver.resolve("base_link", "cam").found
    assert clock.now < 0.1  # one poll, not ten seconds


def test_a_camera_already_under_the_nodes_own_frames_is_tracked_itself():
    clock = _Clock()
    tree = TfTree()
    tree.add([("map", "cam")])  # someone else publishes map -> cam: tracking map would close a loop
    resolver = MountResolver(lambda target, source: None if target == "base_link" else np.eye(4), tree,
                                timeout_s=0.0, clock=clock, sleep=clock.sleep)
    mount = resolver.resolve("base_link", "cam", ("map", "odom"))
    assert (mount.tracked_frame, mount.tracked_from_camera) == ("cam", None)
    assert resolver.resolve("base_link", "cam").tracked_frame == "map"  # without the guard
