"""The ``scale.*`` parameters: typed options out, inconsistent combinations refused naming the parameters."""

from __future__ import annotations

import pytest

from gct_stream_ros import settings
from gct_stream_ros.stream.scale.options import ScaleOptions


def test_defaults_are_the_options_defaults_and_values_reach_the_options():
    assert settings.scale_options(settings.resolve()) == ScaleOptions()
    values = settings.resolve({"scale.source": "camera_height", "scale.camera_height.height": 0.8,
                               "scale.depth.max": 6.0, "scale.sync_tolerance": 0.02})
    options = settings.scale_options(values)
    assert (options.source, options.camera_height, options.depth_max, options.sync_tolerance_s) == (
        "camera_height", 0.8, 6.0, 0.02)


def test_every_scale_parameter_sets_an_option_and_needs_a_restart():
    group = [s for s in settings.SETTINGS if s.name.startswith("scale.")]
    assert sorted(s.scale_field for s in group) == sorted(ScaleOptions.__dataclass_fields__)
    assert all(s.restart for s in group)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"scale.source": "camera_height"}, r"camera_height must be > 0.*scale.camera_height.height"),
    ({"scale.min_samples": 50, "scale.window": 10}, r"min_samples=50.*\[scale.min_samples, scale.window\]"),
    ({"scale.source": "odometry", "scale.odometry.input": "tf", "tf.publish_odom_to_base": True,
      "tf.publish_map_to_camera": False}, "use scale.odometry.input:=topic"),
])
def test_inconsistent_scale_settings_are_refused(overrides, message):
    with pytest.raises(settings.SettingsError, match=message):
        settings.resolve(overrides)


def test_odometry_from_a_topic_goes_with_publishing_odom_to_base():
    settings.resolve({"scale.source": "odometry", "scale.odometry.input": "topic",
                      "tf.publish_odom_to_base": True, "tf.publish_map_to_camera": False})


def test_odometry_alone_works_with_the_default_tf_tree():
    """The node publishes odom -> base by default, so the odometry comes from the topic by default."""
    assert settings.resolve({"scale.source": "odometry"})["scale.odometry.input"] == "topic"
