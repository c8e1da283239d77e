"""StreamSession builds and drives the real network (tiny preset, random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gct_stream_ros.model.gct import GCTModel
from gct_stream_ros.stream.config import EngineConfig
from gct_stream_ros.stream.result import FrameType
from gct_stream_ros.stream.session import StreamSession
from gct_stream_ros.stream.synthetic import SyntheticScene


def test_tiny_model_session_streams_windows_with_interval_keyframes():
    torch.manual_seed(0)
    frames = SyntheticScene(0).render_sequence(7, 84, 63)
    config = EngineConfig(preset="tiny", device="cpu", image_width=56, num_scale_frames=2, window_overlap=2,
                          keyframe_mode="interval", keyframe_interval=2, window_mode="online", window_size=3,
                          cache_sliding_window=4, cache_max_frames=8)
    session = StreamSession(config)
    assert isinstance(session.network, GCTModel) and session.network.config.scale_frames == 2
    per_push = [session.push(frame.image, frame.stamp_ns) for frame in frames]
    results = [result for results in per_push for result in results]
    first = [result for result in results if not result.revision]
    assert [result.index for result in first] == list(range(7))
    assert [result.frame_type for result in first[:5]] == [FrameType.SCALE] * 2 + [
        FrameType.KEYFRAME, FrameType.NON_KEYFRAME, FrameType.KEYFRAME]
    # Windows of 4 frames (2 scale frames, then a keyframe and a non-keyframe) overlapping by 2.
    assert [result.index for result in results if result.revision] == [2, 3, 4, 5]
    result = first[-1]
    assert result.depth.shape == (42, 56) and np.all(np.isfinite(result.depth)) and np.all(result.depth > 0)
    assert result.image.shape == (42, 56, 3) and result.intrinsics_input.shape == (3, 3)
    assert result.world_points.shape == (42, 56, 3) and result.window == 2
    stats = session.stats()
    assert stats.frames_stored == session.network.frames_stored == 3 and stats.window == 2


@pytest.mark.parametrize("compile_model", [False, True])
def test_the_compile_setting_compiles_the_network(monkeypatch, compile_model):
    calls = []
    monkeypatch.setattr(GCTModel, "compile_regions", lambda model, **options: calls.append(options))
    config = EngineConfig(preset="tiny", device="cpu", image_width=56, compile=compile_model)
    session = StreamSession(config)
    assert calls == ([{}] if compile_model else [])
    # CUDA graphs are on by default, but only for CUDA devices
    assert config.cuda_graphs and session.network.step_graphs is None


@pytest.mark.parametrize(("dtype", "half"), [("bfloat16", True), ("bfloat16", False), ("float32", True)])
def test_the_half_head_settings_reach_the_network(dtype, half):
    config = EngineConfig(preset="tiny", device="cpu", image_width=56, dtype=dtype, half_depth_head=half,
                          half_camera_head=half)
    network = StreamSession(config).network
    in_half = half and dtype != "float32"
    assert network.half_depth_head == in_half
    assert network.camera_head.trunk_dtype == (torch.float16 if in_half else torch.float32)
