"""The TF tree the node sees: second parents are found (once), our own edges never count, roots are found."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from gct_stream_ros.ros.tf_tree import TfTree  # noqa: E402

ROBOT = [("base_link", "camera_link"), ("camera_link", "camera_color_optical_frame")]


def test_a_driver_frame_already_has_a_parent():
    tree = TfTree()
    tree.add(ROBOT)
    assert tree.other_parent("map", "camera_color_optical_frame") == "camera_link"
    assert tree.other_parent("camera_link", "camera_color_optical_frame") is None
    assert tree.other_parent("odom", "base_link") is None


def test_a_conflict_is_reported_once():
    tree = TfTree()
    tree.add(ROBOT)
    edge = ("map", "camera_color_optical_frame")
    assert tree.report_once(edge) and not tree.report_once(edge)
    assert tree.report_once(("odom", "base_link"))


def test_our_own_edges_heard_back_are_not_parents():
    tree = TfTree()
    tree.claim([("odom", "base_link"), ("map", "odom")])
    tree.add([("odom", "base_link"), ("map", "odom")])
    assert tree.parents_of("base_link") == set() and tree.root_of("base_link") == "base_link"
    tree.add([("wheel_odom", "base_link")])
    assert tree.other_parent("odom", "base_link") == "wheel_odom"


def test_root_of_a_frame():
    tree = TfTree()
    assert tree.root_of("camera") == "camera"
    tree.add(ROBOT)
    assert tree.root_of("camera_color_optical_frame") == "base_link"
    tree.add([("b", "a"), ("a", "b")])  # a loop ends where it closes
    assert tree.root_of("a") in ("a", "b")
