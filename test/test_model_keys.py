"""Checkpoint compatibility: the state-dict layout equals the reference's (built on the meta device)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.gct import GCTModel

OFFICIAL_KEYS = Path(__file__).resolve().parents[1] / "gct_stream_ros/model/data/lingbot_map_keys.json"


def _layout(config: GCTConfig) -> dict[str, list[int]]:
    with torch.device("meta"):
        model = GCTModel(config)
    return {key: list(value.shape) for key, value in model.state_dict().items()}


def test_lingbot_map_preset_has_the_official_1342_keys_and_shapes():
    official = {key: shape for key, shape in json.loads(OFFICIAL_KEYS.read_text())["keys"]}
    layout = _layout(GCTConfig.preset("lingbot-map"))
    assert layout == official
    assert sum(torch.Size(shape).numel() for shape in layout.values()) == 1_157_943_540


def test_reference_kwargs_with_point_head_add_the_62_point_head_keys():
    kwargs = dict(img_size=518, patch_size=14, embed_dim=1024, patch_embed="dinov2_vitl14_reg",
                  enable_point=True, kv_cache_sliding_window=3, kv_cache_scale_frames=2,
                  camera_num_iterations=2, use_sdpa=False)
    config = GCTConfig.from_reference_kwargs(kwargs)
    assert (config.sliding_window, config.scale_frames, config.camera_iterations) == (3, 2, 2)
    layout = _layout(config)
    assert len(layout) == 1404 and sum(k.startswith("point_head.") for k in layout) == 62
    assert layout["point_head.scratch.output_conv2.2.weight"] == [4, 32, 1, 1]


@pytest.mark.parametrize("kwargs", [{"enable_local_point": True}, {"patch_embed": "dinov2_vits14_reg"},
                                    {"not_an_option": 1}, {"kv_cache_camera_only": True}])
def test_unsupported_reference_kwargs_are_rejected(kwargs):
    with pytest.raises(ValueError):
        GCTConfig.from_reference_kwargs(kwargs)


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match="tiny"):
        GCTConfig.preset("huge")
