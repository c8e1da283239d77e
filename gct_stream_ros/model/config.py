"""Every architecture knob of the GCT network, with the official and a tiny preset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gct_stream_ros.cache.sizes import DEFAULT_MAX_FRAMES

# reference constructor arguments that do not change streaming inference (training, or other inference paths)
_REFERENCE_KWARGS_WITHOUT_EFFECT = frozenset({
    "use_sdpa", "pretrained_path", "sliding_window_size", "attend_to_scale_frames",
    "attend_to_special_tokens", "num_random_frames", "enable_stream_inference", "use_scale_token",
    "enable_normalize", "use_gradient_checkpoint", "num_frame_for_scale", "enable_track",
})
# reference constructor arguments whose only supported value is the demo's
_REFERENCE_KWARGS_FIXED = {
    "enable_camera": True, "enable_local_point": False, "kv_cache_cross_frame_special": True,
    "kv_cache_include_scale_frames": True, "kv_cache_camera_only": False, "disable_global_rope": False,
    "pred_normalization": False, "enable_camera_3d_rope": False,
}
PRESETS = ("lingbot-map", "tiny")
PATCH_SIZE = 14
"""Pixels per side of a DINO patch: model images are multiples of it."""
RESIZE_METHODS = ("pil", "torch")
"""The resize filters of ``preprocess.py`` (named here, where no torch is imported, for the settings)."""
# DINO backbone name -> (its width, the config fields it decides)
_DINO_VARIANTS = {"dinov2_vitl14_reg": (1024, dict(dino_depth=24, dino_num_heads=16))}


@dataclass(frozen=True)
class GCTConfig:
    """Architecture of the GCT network; defaults are the official ``lingbot-map`` checkpoint."""

    img_size: int = 518
    """Side of the square DINO position-embedding grid in pixels (518 / 14 = 37 patches)."""
    patch_size: int = PATCH_SIZE
    embed_dim: int = 1024
    """Width of the DINO backbone and of the aggregator."""
    depth: int = 24
    """Frame blocks (and as many global blocks) of the aggregator."""
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    """Register tokens per frame in the aggregator (and DINO's own registers)."""
    init_values: float = 0.01
    """LayerScale init of the aggregator blocks (random weights only)."""
    rope_frequency: float = 100.0
    """Base of the 2D RoPE of the frame blocks."""
    enable_3d_rope: bool = True
    """Global blocks use the (time, row, column) RoPE; off: the 2D RoPE, no temporal signal."""
    rope3d_theta: float = 10000.0
    rope3d_split: tuple[int, int, int] = (20, 22, 22)
    """Head-dim channels rotated by time, row and column (their sum is the head dim)."""
    max_frame_num: int = 1024
    """Informative: the temporal index the model was trained up to (angles are computed, not tabled)."""
    dino_depth: int = 24
    dino_num_heads: int = 16
    dino_mlp_ratio: float = 4.0
    selected_layers: tuple[int, ...] = (4, 11, 17, 23)
    """Aggregator depths whose [frame, global] outputs feed the heads (the camera head uses the last)."""
    camera_dim: int = 2048
    """Width of the camera head (twice the embed dim: frame and global features)."""
    camera_num_heads: int = 16
    camera_depth: int = 4
    camera_mlp_ratio: float = 4.0
    camera_iterations: int = 4
    """Iterative refinements of the pose (fewer is faster)."""
    dpt_features: int = 256
    dpt_out_channels: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    dpt_head_features: int = 32
    """Channels of the last hidden convolution of the DPT heads."""
    enable_depth: bool = True
    enable_point: bool = False
    """World-point DPT head; not in the official checkpoint."""
    scale_frames: int = 8
    """Phase-1 frames of a sequence: scale-token variant and never evicted from the cache."""
    sliding_window: int = 64
    """Most recent stored frames kept whole in the aggregator cache besides the scale frames."""
    max_frames: int = DEFAULT_MAX_FRAMES
    """Bound on stored frames whose specials (and camera-head entries) are kept; 0 = unbounded."""

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def num_special_tokens(self) -> int:
        """Camera, registers and scale token: the first tokens of every frame."""
        return self.num_register_tokens + 2

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GCTConfig:
        """``lingbot-map`` (ViT-L, the official checkpoints) or ``tiny`` (random weights, tests)."""
        if name == "lingbot-map":
            return cls(**overrides)
        if name == "tiny":
            # head dim 64 so that the 3D RoPE split applies unchanged
            tiny = dict(embed_dim=128, depth=4, num_heads=2, dino_depth=2, dino_num_heads=2,
                        selected_layers=(0, 1, 2, 3), camera_dim=256, camera_num_heads=2, camera_depth=2,
                        dpt_features=32, dpt_out_channels=(16, 32, 64, 64), dpt_head_features=16)
            return cls(**{**tiny, **overrides})
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")

    @classmethod
    def from_reference_kwargs(cls, kwargs: dict[str, Any]) -> GCTConfig:
        """Config equivalent to the reference ``GCTStream(**kwargs)`` (as in a parity fixture)."""
        config: dict[str, Any] = {}
        dino_width = None
        for key, value in kwargs.items():
            if key in _REFERENCE_KWARGS_WITHOUT_EFFECT:
                continue
            if key in _REFERENCE_KWARGS_FIXED:
                if value != _REFERENCE_KWARGS_FIXED[key]:
                    raise ValueError(f"reference option {key}={value!r} is not supported")
            elif key == "patch_embed":
                if value not in _DINO_VARIANTS:
                    raise ValueError(f"patch_embed={value!r} is not supported ({', '.join(_DINO_VARIANTS)})")
                dino_width, dino_fields = _DINO_VARIANTS[value]
                config.update(dino_fields)
            elif key in _RENAMED:
                config[_RENAMED[key]] = value
            elif key in _FIELD_NAMES:
                config[key] = value
            else:
                raise ValueError(f"unknown reference option {key!r}")
        embed_dim = config.setdefault("embed_dim", cls.embed_dim)
        if dino_width is not None and embed_dim != dino_width:
            raise ValueError(f"embed_dim={embed_dim} differs from the DINO width {dino_width}")
        config["camera_dim"] = 2 * embed_dim
        config.setdefault("max_frames", 0)  # the reference keeps every stored frame's specials
        return cls(**config)


_RENAMED = {
    "kv_cache_sliding_window": "sliding_window",
    "kv_cache_scale_frames": "scale_frames",
    "camera_num_iterations": "camera_iterations",
}
_FIELD_NAMES = {f.name for f in dataclasses.fields(GCTConfig)}
