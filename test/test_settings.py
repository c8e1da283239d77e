"""The parameter table: defaults valid, checks with reasons, CLI and YAML parsing, EngineConfig mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from gct_stream_ros import settings
from gct_stream_ros.settings import SettingsError
from gct_stream_ros.stream.config import EngineConfig

TINY = {"model.preset": "tiny"}


def test_every_engine_field_but_compute_points_has_a_parameter():
    mapped = {s.engine_field for s in settings.SETTINGS if s.engine_field}
    assert mapped == set(EngineConfig.field_names()) - {"compute_points"}


def test_defaults_are_valid_and_follow_the_engine():
    values = settings.resolve()
    assert values["model.image_width"] == EngineConfig().image_width
    assert values["cache.policy"] == EngineConfig().cache_policy
    assert values["model.checkpoint"] == "auto"
    assert settings.engine_config(values).weights == "hf"


@pytest.mark.parametrize(("overrides", "description"), [
    ({}, "sliding_window (8 scale + 64 recent frames; frames recycled past 1024)"),
    ({"cache.policy": "evict3r", "cache.budget": 0.5},
     "evict3r (budget 0.5 x the window of 8 scale + 64 recent frames; frames recycled past 1024)"),
    ({"cache.policy": "infinitevggt", "cache.budget_tokens": 30000, "cache.max_frames": 0},
     "infinitevggt (30000 patch tokens a layer, evicting every 2 frames; unbounded)"),
    ({"cache.policy": "infinitevggt"},
     "infinitevggt (budget 1 x the window of 8 scale + 64 recent frames, evicting every 2 frames; "
     "frames recycled past 1024)"),
    ({"cache.policy": "infinitevggt", "cache.evict_every": 1},
     "infinitevggt (budget 1 x the window of 8 scale + 64 recent frames; frames recycled past 1024)"),
    ({"cache.policy": "evict3r", "cache.evict_every": 3},
     "evict3r (budget 1 x the window of 8 scale + 64 recent frames, evicting every 3 frames; "
     "frames recycled past 1024)"),
])
def test_the_cache_is_described_with_what_it_keeps(overrides, description):
    assert settings.engine_config(settings.resolve({**TINY, **overrides})).cache_description == description


@pytest.mark.parametrize(("overrides", "weights"), [
    ({"model.preset": "tiny"}, None),
    ({"model.preset": "tiny", "model.checkpoint": "random"}, None),
    ({"model.preset": "tiny", "model.checkpoint": ""}, None),
    ({"model.preset": "tiny", "model.checkpoint": "/w/tiny.pt"}, "/w/tiny.pt"),
    ({"model.preset": "lingbot-map", "model.checkpoint": "hf"}, "hf"),
])
def test_the_checkpoint_follows_the_preset_unless_named(overrides, weights):
    assert settings.engine_config(settings.resolve(overrides)).weights == weights


def test_a_window_setting_is_only_checked_when_windows_are_on():
    values = settings.resolve({**TINY, "model.num_scale_frames": 2})
    assert (values["window.mode"], values["window.overlap"]) == ("off", 8)
    with pytest.raises(SettingsError, match=r"window_overlap=8 must be <= num_scale_frames=2"):
        settings.resolve({**TINY, "model.num_scale_frames": 2, "window.mode": "online"})


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("frames.map", "", "empty"),
    ("frames.odom", "/odom", "cannot start with '/'"),
    ("frames.base", "base link", "blanks"),
    ("frames.camera", "cam\tera", "blanks"),
    ("frames.camera", "", "empty"),
])
def test_frame_names_tf2_would_refuse_are_refused(name, value, reason):
    with pytest.raises(SettingsError, match=reason):
        settings.resolve({**TINY, name: value})


def test_unknown_names_are_refused_and_ros_names_pass():
    settings.check_names(["model.image_width", "use_sim_time", "qos_overrides./image.subscription.depth"])
    with pytest.raises(SettingsError, match=r"unknown parameter 'model.image_widht' \(did you mean "
                                            r"model.image_width"):
        settings.check_names(["model.preset", "model.image_widht"])


def test_engine_config_receives_the_values():
    values = settings.resolve({**TINY, "model.image_width": 140, "window.mode": "online",
                               "model.resize": "torch"})
    config = settings.engine_config(values)
    assert (config.preset, config.image_width, config.window_mode, config.resize) == ("tiny", 140, "online",
                                                                                      "torch")


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("model.image_width", 100, "multiple of 14"),
    ("model.image_width", 14, "below the minimum"),
    ("model.preset", "huge", "not one of"),
    ("model.resize", "cv2", "not one of auto, pil, torch"),
    ("queue.size", 0, "below the minimum"),
    ("output.depth.encoding", "8UC1", "not one of"),
    ("queue.size", 2.5, "takes a int"),
    ("tf.publish_map_to_odom", 1, "takes a bool"),
    ("queue.size", True, "takes a int"),
])
def test_invalid_values_are_rejected_with_the_reason(name, value, reason):
    with pytest.raises(SettingsError, match=reason):
        settings.resolve({**TINY, name: value})


def test_integers_are_accepted_for_float_parameters():
    assert settings.resolve({**TINY, "output.map.period": 2})["output.map.period"] == 2.0


def test_unknown_names_get_a_suggestion():
    with pytest.raises(SettingsError, match="did you mean model.preset"):
        settings.resolve({"model.presett": "tiny"})


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"window.mode": "online", "window.overlap": 9},
     r"window_overlap=9 .*\[model.num_scale_frames, window.overlap\]"),
    ({"model.preset": "lingbot-map", "model.checkpoint": "random"}, "random weights are only allowed"),
    ({"tf.publish_map_to_camera": True}, "two parents"),
    ({"cache.policy": "evict3r", "cache.budget": 0.1},
     r"cache_budget=0.1 cannot hold the 8 scale frames' patches: it must be >= 0.111 .*\[cache.budget\]"),
])
def test_cross_field_rules(overrides, reason):
    with pytest.raises(SettingsError, match=reason):
        settings.resolve({**TINY, **overrides})


def test_assignments_are_typed_by_the_setting():
    parsed = settings.parse_assignments([
        "model.image_width:=140", "frames.camera:=123", "frames.map:='world'", "tf.publish_map_to_odom:=true",
        "output.map.voxel_size:=1", "model.checkpoint:=random"])
    assert parsed == {"model.image_width": 140, "frames.camera": "123", "frames.map": "world",
                      "tf.publish_map_to_odom": True, "output.map.voxel_size": 1.0,
                      "model.checkpoint": "random"}


@pytest.mark.parametrize("text", ["model.image_width=140", "model.image_width:=wide", "nothing.here:=1"])
def test_malformed_assignments_are_rejected(text):
    with pytest.raises(SettingsError):
        settings.parse_assignment(text)


def test_params_file_in_the_ros_layout(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("""
/**:
  ros__parameters:
    use_sim_time: true
    output: {map: {voxel_size: 0.1}}
gct_stream_node:
  ros__parameters:
    model: {preset: tiny, checkpoint: "", image_width: 70}
    queue: {policy: all}
other_node:
  ros__parameters:
    model: {preset: lingbot-map}
""")
    values = settings.load_params_file(path)
    assert values == {"output.map.voxel_size": 0.1, "model.preset": "tiny", "model.checkpoint": "",
                      "model.image_width": 70, "queue.policy": "all"}
    assert settings.resolve(values)["queue.policy"] == "all"


@pytest.mark.parametrize(("text", "reason"), [
    ("gct_stream_node:\n  ros__parameters:\n    model: {image_width: 71}\n", "multiple of 14"),
    ("gct_stream_node:\n  parameters: {}\n", "no 'ros__parameters'"),
    ("- a list\n", "top level"),
    ("gct_stream_node: {ros__parameters: {model: [", "cannot read"),
])
def test_bad_params_files_say_why(tmp_path, text, reason):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=reason):
        settings.load_params_file(path)


def test_namespaced_sections_apply(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("/robot/gct_stream_node:\n  ros__parameters:\n    queue: {size: 7}\n")
    assert settings.load_params_file(path) == {"queue.size": 7}


@pytest.mark.parametrize("document", ["docs/node.md", "README.md"])
def test_docs_embed_the_current_parameter_table(document):
    docs = (Path(__file__).resolve().parents[1] / document).read_text()
    table = settings.markdown_table()
    assert table in docs
    assert table.count("\n") == len(settings.SETTINGS) + 2
    assert "| `model.image_width` | int | `518` | 28 .. 2044, step 14 |" in table
    # a numeric 0 is shown as 0
    assert "| `cache.budget_tokens` | int | `0` |" in table
    assert "| `scale.camera_height.height` | float | `0.0` |" in table


def test_an_empty_string_default_is_shown_as_quotes(monkeypatch):
    monkeypatch.setattr(settings, "SETTINGS", (settings.Setting("frames.prefix", "", "A prefix"),))
    assert "| `frames.prefix` | str | `\"\"` |  | A prefix |" in settings.markdown_table()
