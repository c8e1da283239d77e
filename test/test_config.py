"""The shipped parameter file and RViz configuration agree with the settings table and the node's topics."""

from __future__ import annotations

from pathlib import Path

import yaml

from gct_stream_ros.ros.topics import OUTPUT_TYPES
from gct_stream_ros.settings import SETTINGS, defaults, flatten, load_params_file
from gct_stream_ros.settings import Setting as SettingEntry
from gct_stream_ros.tools.make_config import main, render_config, yaml_scalar

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / "config" / "gct_stream.yaml"
RVIZ_FILE = ROOT / "config" / "gct_stream.rviz"


def test_params_file_holds_every_parameter_with_its_default():
    document = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(document) == ["/**"]
    values = flatten(document["/**"]["ros__parameters"])
    expected = defaults()
    assert list(values) == list(expected)
    for name, value in values.items():
        assert value == expected[name] and type(value) is type(expected[name]), name


def test_params_file_loads_through_the_settings_parser():
    assert load_params_file(PARAMS_FILE) == defaults()
    assert load_params_file(PARAMS_FILE, node_name="renamed_node") == defaults()


def test_committed_params_file_is_the_generated_one():
    hint = "regenerate: python -m gct_stream_ros.tools.make_config config/gct_stream.yaml"
    assert PARAMS_FILE.read_text() == render_config(), hint


def test_each_parameter_has_a_comment_line_with_its_description():
    lines = render_config().splitlines()
    for entry in SETTINGS:
        leaf = entry.name.rsplit(".", 1)[-1]
        index = next(i for i, line in enumerate(lines)
                     if line.strip().startswith(f"{leaf}:") and entry.description in lines[i - 1])
        assert lines[index - 1].strip().startswith("# "), entry.name


def test_scalars_read_back_with_their_type():
    for value in (True, False, 0, 12, 0.05, 1e-05, 2.5e10, "off", "", "32FC1", "yes", "1.5"):
        assert yaml.safe_load(yaml_scalar(value)) == value
        assert type(yaml.safe_load(yaml_scalar(value))) is type(value)


def test_comments_show_choices_and_ranges():
    text = render_config((SettingEntry("a.b", 2, "Count", low=1, high=9), SettingEntry("a.c", "x", "Pick",
                                                                                         choices=("x", "y"))))
    assert "# Count [1 .. 9]\n      b: 2\n" in text and "# Pick [x, y]\n      c: \"x\"\n" in text


def test_cli_writes_the_file(tmp_path):
    target = tmp_path / "out.yaml"
    assert main([str(target)]) == 0
    assert target.read_text() == render_config()


def _rviz_displays() -> dict[str, dict]:
    manager = yaml.safe_load(RVIZ_FILE.read_text())["Visualization Manager"]
    return manager, {d["Name"]: d for d in manager["Displays"]}


def test_rviz_fixed_frame_is_the_default_map_frame():
    manager, _ = _rviz_displays()
    assert manager["Global Options"]["Fixed Frame"] == defaults()["frames.map"]


def test_rviz_shows_tf_clouds_depth_odometry_and_path():
    _, displays = _rviz_displays()
    shown = {(d["Class"].rsplit("/", 1)[-1], d.get("Topic", {}).get("Value")) for d in displays.values()
             if d["Enabled"]}
    assert {("TF", None), ("PointCloud2", "points"), ("PointCloud2", "map/points"), ("Image", "depth/image"),
            ("Odometry", "odometry"), ("Path", "path")} <= shown
    # The node creates its publishers from OUTPUT_TYPES (test_ros_node checks the running node against it).
    assert {(kind, topic) for kind, topic in shown if topic} <= {
        (msgtype.rsplit("/", 1)[-1], topic) for topic, msgtype in OUTPUT_TYPES.items()}


def test_rviz_map_cloud_subscribes_latched_like_the_node_publishes_it():
    _, displays = _rviz_displays()
    cloud = next(d for d in displays.values() if d.get("Topic", {}).get("Value") == "map/points")
    assert cloud["Topic"]["Durability Policy"] == "Transient Local"
    assert all(d["Topic"]["Reliability Policy"] == "Reliable" for d in displays.values() if "Topic" in d)
