"""Build the real network a session drives, with its KV cache, from the engine settings."""

from __future__ import annotations

import torch

from gct_stream_ros.cache.factory import build_cache
from gct_stream_ros.model.checkpoint import build_model
from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.gct import GCTModel
from gct_stream_ros.stream.config import EngineConfig


def network_config(config: EngineConfig) -> GCTConfig:
    """The architecture of ``config.preset`` with the session's scale, window and camera settings."""
    return GCTConfig.preset(config.preset, scale_frames=config.num_scale_frames,
                            sliding_window=config.cache_sliding_window,
                            camera_iterations=config.camera_iterations, max_frames=config.cache_max_frames)


def build_network(config: EngineConfig, device: torch.device, dtype: torch.dtype) -> GCTModel:
    """The model of ``config`` (weights from ``config.weights``, random when None) on ``device``,
    its aggregator and cache in ``dtype``, with the cache of ``config.cache_policy``, compiled when
    ``config.compile``, its steps replayed from CUDA graphs when ``config.cuda_graphs`` on CUDA."""
    architecture = network_config(config)
    cache = build_cache(config, architecture.depth, architecture.num_heads, architecture.head_dim,
                        device=device, dtype=dtype)
    model = build_model(architecture, config.weights, device, dtype, cache=cache,
                        half_depth_head=config.half_depth_head, half_camera_head=config.half_camera_head)
    if config.compile:
        model.compile_regions()
    if config.cuda_graphs and device.type == "cuda":
        model.replay_steps()
    return model
