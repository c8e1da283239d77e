"""Typed options: every parameter of the table lands in exactly one typed field."""

from __future__ import annotations

import dataclasses

import pytest

from gct_stream_ros.settings import SETTINGS, resolve

pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from gct_stream_ros.ros.options import NodeOptions  # noqa: E402

TINY = {"model.preset": "tiny", "model.checkpoint": ""}


def _fields(options: NodeOptions) -> dict[str, object]:
    """Dotted parameter name -> value, read back from the typed groups (engine and scale fields by their
    setting)."""
    values = {}
    for group in dataclasses.fields(options):
        if group.name in ("engine", "scale"):
            continue
        prefix = {"map_files": "map"}.get(group.name, group.name)
        for entry in dataclasses.fields(getattr(options, group.name)):
            values[f"{prefix}.{entry.name}"] = getattr(getattr(options, group.name), entry.name)
    for entry in SETTINGS:
        if entry.engine_field:
            values[entry.name] = getattr(options.engine, entry.engine_field)
        if entry.scale_field:
            values[entry.name] = getattr(options.scale, entry.scale_field)
    return values


def test_every_parameter_has_one_typed_field_with_its_value():
    values = resolve({**TINY, "output.points.decimation": 5, "frames.base": "robot", "queue.size": 7})
    typed = _fields(NodeOptions.from_values(values))
    # Dots inside a group become underscores: compare names without them.
    def normalized(named: dict) -> dict:
        return {name.replace("_", "."): value for name, value in named.items()}

    assert normalized(typed) == normalized(values)


def test_options_are_frozen_and_a_group_missing_a_parameter_fails_to_build():
    options = NodeOptions.from_values(resolve(TINY))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.frames.map = "world"
    with pytest.raises(TypeError):
        NodeOptions.from_values({**resolve(TINY), "frames.extra": "x"})


def test_output_frames_follow_the_tf_mode():
    default = NodeOptions.from_values(resolve(TINY))
    camera_only = NodeOptions.from_values(resolve({**TINY, "tf.publish_map_to_camera": True,
                                                   "tf.publish_odom_to_base": False}))
    odom_only = NodeOptions.from_values(resolve({**TINY, "tf.publish_map_to_odom": False}))
    assert (default.world_frame, default.odometry_frame) == ("map", "odom")
    assert (camera_only.world_frame, camera_only.odometry_frame) == ("map", "map")
    assert (odom_only.world_frame, odom_only.odometry_frame) == ("odom", "odom")
