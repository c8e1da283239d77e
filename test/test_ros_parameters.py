"""The node's parameters through rclpy's public API: overrides from the command line, a parameter file or
the constructor are declared with their descriptors and checked; a name the node does not have is refused."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from gct_stream_ros.ros.parameters import NODE_OPTIONS, NodeParameters  # noqa: E402
from gct_stream_ros.settings import SettingsError  # noqa: E402

NODE = "parameters_under_test"


@pytest.fixture(scope="module")
def context():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=219, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    yield context
    rclpy.shutdown(context=context)


def _parameters(context, cli_args: list[str] | None = None, overrides: dict | None = None) -> NodeParameters:
    node = Node(NODE, context=context, cli_args=["--ros-args", *(cli_args or [])],
                parameter_overrides=[Parameter(k, value=v) for k, v in (overrides or {}).items()],
                **NODE_OPTIONS)
    try:
        return NodeParameters(node)
    finally:
        node.destroy_node()


def test_command_line_values_are_read_through_the_declared_descriptors(context):
    values = _parameters(context, ["-p", "queue.size:=7", "-p", "output.map.voxel_size:=1",
                                   "-p", "use_sim_time:=true"]).values
    assert values["queue.size"] == 7
    assert values["output.map.voxel_size"] == 1.0  # an integer for a float parameter, as YAML writes it
    assert values["model.preset"] == "lingbot-map"  # not overridden: the default


def test_the_declared_descriptors_are_what_ros2_param_describe_shows(context):
    node = Node(NODE, context=context, cli_args=["--ros-args", "-p", "queue.size:=7"], **NODE_OPTIONS)
    try:
        NodeParameters(node)
        size = node.describe_parameter("queue.size")
        assert size.read_only and size.integer_range[0].to_value == 1000
        assert not node.describe_parameter("output.map.period").read_only
    finally:
        node.destroy_node()


@pytest.mark.parametrize("source", ["command line", "parameter file", "constructor"])
def test_a_name_the_node_does_not_have_is_refused_from_every_source(context, tmp_path, source):
    cli_args, overrides = [], {}
    if source == "command line":
        cli_args = ["-p", "model.image_widht:=112"]
    elif source == "parameter file":
        path = tmp_path / "params.yaml"
        path.write_text(f"{NODE}:\n  ros__parameters:\n    model:\n      image_widht: 112\n")
        cli_args = ["--params-file", str(path)]
    else:
        overrides = {"model.image_widht": 112}
    with pytest.raises(SettingsError, match=r"unknown parameter 'model.image_widht' \(did you mean "
                                            r"model.image_width"):
        _parameters(context, cli_args, overrides)


def test_an_override_out_of_range_is_refused_with_its_name(context):
    with pytest.raises(SettingsError, match="queue.size"):
        _parameters(context, ["-p", "queue.size:=0"])
