"""The launch file, loaded with stand-ins for `launch`/`launch_ros` (not installable here).

The stand-ins record what the launch file builds, so its arguments, remappings, parameters and
the optional RViz node are checked without a ROS install; `test_launch_pytest.py` runs it for real.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from gct_stream_ros.settings import NODE_NAME, SETTINGS_BY_NAME

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "gct_stream.launch.py"
REQUIRED_ARGUMENTS = {"checkpoint", "preset", "device", "image_topic", "camera_info_topic", "transport",
                      "params_file", "namespace", "use_sim_time", "rviz", "log_level"}


class Recorded:
    """Any launch action: keeps its constructor arguments."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


def _stub_modules() -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in ("launch", "launch.actions", "launch_ros",
                                                         "launch_ros.actions")}
    modules["launch"].LaunchDescription = type("LaunchDescription", (Recorded,), {})
    modules["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (Recorded,), {})
    modules["launch.actions"].OpaqueFunction = type("OpaqueFunction", (Recorded,), {})
    modules["launch_ros.actions"].Node = type("Node", (Recorded,), {})
    return modules


@pytest.fixture
def launch_module(monkeypatch):
    for name, module in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("gct_stream_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _declared(launch_module) -> dict[str, Recorded]:
    description = launch_module.generate_launch_description()
    actions = description.args[0]
    return {a.args[0]: a for a in actions if type(a).__name__ == "DeclareLaunchArgument"}


def _nodes(launch_module, **given: str) -> list[Recorded]:
    values = {name: action.kwargs["default_value"] for name, action in _declared(launch_module).items()}
    values.update(given)
    context = types.SimpleNamespace(launch_configurations=values)
    return launch_module.node_actions(context)


def test_every_argument_is_declared_with_a_description(launch_module):
    declared = _declared(launch_module)
    assert set(declared) == REQUIRED_ARGUMENTS
    for name, action in declared.items():
        assert len(action.kwargs["description"]) > 15, name


def test_params_file_defaults_to_the_packaged_config(launch_module):
    default = Path(_declared(launch_module)["params_file"].kwargs["default_value"])
    assert default == ROOT / "config" / "gct_stream.yaml" and default.is_file()


def test_defaults_start_only_the_node_with_the_params_file(launch_module):
    (node,) = _nodes(launch_module)
    assert node.kwargs["executable"] == "gct_stream_node" and node.kwargs["package"] == "gct_stream_ros"
    assert node.kwargs["name"] == NODE_NAME, "the params file and the offline tool use this name"
    params_file, overrides = node.kwargs["parameters"]
    assert params_file == str(ROOT / "config" / "gct_stream.yaml")
    # Empty arguments must not hide the file's values.
    assert overrides == {"use_sim_time": False}
    assert node.kwargs["remappings"] == [("image", "/camera/image_raw"),
                                         ("image/compressed", "/camera/image_raw/compressed"),
                                         ("camera_info", "/camera/camera_info")]
    assert node.kwargs["ros_arguments"] == ["--log-level", "info"]


def test_arguments_become_overrides_remappings_and_rviz(launch_module):
    node, rviz = _nodes(launch_module, checkpoint="hf", preset="tiny", device="cpu", transport="compressed",
                        image_topic="/front/color/image", camera_info_topic="/front/info", namespace="robot1",
                        use_sim_time="true", rviz="True", log_level="debug")
    assert node.kwargs["parameters"][1] == {"model.checkpoint": "hf", "model.preset": "tiny",
                                            "model.device": "cpu", "input.transport": "compressed",
                                            "use_sim_time": True}
    assert dict(node.kwargs["remappings"]) == {"image": "/front/color/image",
                                               "image/compressed": "/front/color/image/compressed",
                                               "camera_info": "/front/info"}
    assert node.kwargs["namespace"] == "robot1" and node.kwargs["ros_arguments"] == ["--log-level", "debug"]
    assert rviz.kwargs["executable"] == "rviz2" and rviz.kwargs["namespace"] == "robot1"
    config = Path(rviz.kwargs["arguments"][1])
    assert rviz.kwargs["arguments"][0] == "-d" and config == ROOT / "config" / "gct_stream.rviz"
    assert config.is_file() and rviz.kwargs["parameters"] == [{"use_sim_time": True}]


def test_camera_info_is_derived_from_the_image_namespace(launch_module):
    assert launch_module.camera_info_topic("/cam/left/image_raw", "") == "/cam/left/camera_info"
    assert launch_module.camera_info_topic("image", "") == "camera_info"
    assert launch_module.camera_info_topic("/image", "") == "/camera_info"
    assert launch_module.camera_info_topic("/x/image", "/given") == "/given"


def test_overrides_name_real_parameters_with_matching_choices(launch_module):
    assert set(launch_module.PARAMETER_OVERRIDES.values()) <= set(SETTINGS_BY_NAME)
    description = _declared(launch_module)["transport"].kwargs["description"]
    assert all(choice in description for choice in SETTINGS_BY_NAME["input.transport"].choices)


def test_tiny_preset_runs_on_random_weights_unless_a_checkpoint_is_given(launch_module):
    (node,) = _nodes(launch_module, preset="tiny")
    overrides = node.kwargs["parameters"][1]
    assert overrides == {"model.preset": "tiny", "model.checkpoint": "", "use_sim_time": False}
    (node,) = _nodes(launch_module, preset="tiny", checkpoint="/weights/tiny.pt")
    assert node.kwargs["parameters"][1]["model.checkpoint"] == "/weights/tiny.pt"
