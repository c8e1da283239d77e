"""The TF buffer used without tf2_ros: chains of latest transforms, in either direction, across branches."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from gct_stream_ros.ros.messages import to_nanoseconds, transform_stamped  # noqa: E402
from gct_stream_ros.ros.tf import matrix_from_transform  # noqa: E402
from gct_stream_ros.ros.tf_buffer import TransformBuffer, TransformLookupError  # noqa: E402


def _rigid(seed: int) -> np.ndarray:
    """A random rotation and translation."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation = q * np.sign(np.diag(r))
    if np.linalg.det(rotation) < 0:
        rotation[:, 0] *= -1
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = rotation, rng.normal(size=3)
    return matrix


LINKS = {  # child: (parent, transform, stamp)
    "base_link": ("odom", _rigid(1), 50),
    "camera_link": ("base_link", _rigid(2), 0),
    "camera_optical": ("camera_link", _rigid(3), 0),
    "laser": ("base_link", _rigid(4), 0),
}
STATIC = {"camera_link", "camera_optical", "laser"}
AUTHORITY = "test"


@pytest.fixture
def buffer() -> TransformBuffer:
    tree = TransformBuffer()
    for child, (parent, matrix, stamp) in LINKS.items():
        transform = transform_stamped(matrix, stamp, parent, child)
        if child in STATIC:
            tree.set_transform_static(transform, AUTHORITY)
        else:
            tree.set_transform(transform, AUTHORITY)
    return tree


def _lookup(buffer: TransformBuffer, target: str, source: str) -> np.ndarray:
    return matrix_from_transform(buffer.lookup_transform(target, source))


def test_a_chain_of_links_is_their_product(buffer):
    mount = LINKS["camera_link"][1] @ LINKS["camera_optical"][1]
    found = buffer.lookup_transform("base_link", "camera_optical")
    assert (found.header.frame_id, found.child_frame_id) == ("base_link", "camera_optical")
    np.testing.assert_allclose(matrix_from_transform(found), mount, atol=1e-9)
    np.testing.assert_allclose(_lookup(buffer, "odom", "camera_optical"), LINKS["base_link"][1] @ mount,
                               atol=1e-9)


def test_the_reverse_lookup_is_the_inverse(buffer):
    np.testing.assert_allclose(_lookup(buffer, "camera_optical", "odom"),
                               np.linalg.inv(_lookup(buffer, "odom", "camera_optical")), atol=1e-9)


def test_frames_on_different_branches_meet_at_their_common_parent(buffer):
    laser_in_camera = np.linalg.inv(LINKS["camera_link"][1] @ LINKS["camera_optical"][1]) @ LINKS["laser"][1]
    np.testing.assert_allclose(_lookup(buffer, "camera_optical", "laser"), laser_in_camera, atol=1e-9)


def test_the_stamp_is_the_oldest_dynamic_link_and_zero_when_all_are_static(buffer):
    assert to_nanoseconds(buffer.lookup_transform("odom", "camera_optical").header.stamp) == 50
    assert to_nanoseconds(buffer.lookup_transform("base_link", "camera_optical").header.stamp) == 0


def test_the_newest_transform_of_a_frame_replaces_the_older_one_parent_included(buffer):
    moved = _rigid(5)
    buffer.set_transform(transform_stamped(moved, 60, "odom", "base_link"), AUTHORITY)
    np.testing.assert_allclose(_lookup(buffer, "odom", "base_link"), moved, atol=1e-9)
    buffer.set_transform_static(transform_stamped(np.eye(4), 0, "map", "camera_link"), AUTHORITY)
    np.testing.assert_allclose(_lookup(buffer, "map", "camera_optical"), LINKS["camera_optical"][1],
                               atol=1e-9)
    with pytest.raises(TransformLookupError):
        buffer.lookup_transform("base_link", "camera_optical")


def test_unknown_or_unconnected_frames_raise_and_a_frame_is_itself(buffer):
    with pytest.raises(TransformLookupError, match="'base_link' and 'nowhere'"):
        buffer.lookup_transform("base_link", "nowhere")
    buffer.set_transform(transform_stamped(np.eye(4), 0, "world", "other_robot"), AUTHORITY)
    with pytest.raises(TransformLookupError):
        buffer.lookup_transform("odom", "other_robot")
    np.testing.assert_allclose(_lookup(buffer, "nowhere", "nowhere"), np.eye(4))


def test_a_loop_in_a_broken_tree_ends_the_search(buffer):
    # odom under its own child
    buffer.set_transform(transform_stamped(np.eye(4), 0, "camera_optical", "odom"), AUTHORITY)
    with pytest.raises(TransformLookupError):
        buffer.lookup_transform("map", "camera_optical")
    np.testing.assert_allclose(_lookup(buffer, "camera_link", "camera_optical"), LINKS["camera_optical"][1],
                               atol=1e-9)

