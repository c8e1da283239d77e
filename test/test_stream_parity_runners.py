"""The engine-driven parity runners (flow keyframes, windows) on a tiny random model."""

from __future__ import annotations

import math

import pytest
import torch

from gct_stream_ros.model.gct import GCTModel
from gct_stream_ros.tools.parity import RUNNERS, runner_key
from gct_stream_ros.tools.parity_engine import run_flow_streaming, run_windowed, window_overlap

FRAMES, HEIGHT, WIDTH = 8, 28, 42


@pytest.fixture
def model(tiny_model) -> GCTModel:
    return tiny_model(enable_point=True, sliding_window=3)


@pytest.fixture
def images(frames) -> torch.Tensor:
    return frames(FRAMES, HEIGHT, WIDTH)


def test_scenarios_are_routed_to_the_engine_runners():
    assert RUNNERS[runner_key({"method": "inference_streaming", "call_kwargs": {"flow_threshold": 2.0}})] \
        is run_flow_streaming
    assert RUNNERS[runner_key({"method": "inference_windowed", "call_kwargs": {}})] is run_windowed


def test_flow_runner_lays_out_decisions_and_flows(model, images):
    kwargs = dict(num_scale_frames=2, keyframe_interval=1, flow_threshold=1.0, max_non_keyframe_gap=30)
    outputs = run_flow_streaming(model, images, kwargs)
    assert outputs["pose_enc"].shape == (1, FRAMES, 9)
    assert outputs["depth"].shape == (1, FRAMES, HEIGHT, WIDTH, 1)
    assert outputs["world_points"].shape == (1, FRAMES, HEIGHT, WIDTH, 3)
    types = outputs["frame_type"][0].tolist()
    flows = outputs["flow_magnitude"][0].tolist()
    assert types[:2] == [0, 0] and all(math.isnan(flow) for flow in flows[:2])
    assert types[2] == 1
    assert [t == 1 for t in types[3:]] == [flow > 1.0 for flow in flows[3:]]


def test_windowed_runner_reports_every_window(model, images):
    kwargs = {"window_size": 4, "overlap_size": 2, "num_scale_frames": 2, "keyframe_interval": 1}
    outputs = run_windowed(model, images, kwargs)
    # Windows of 4 frames, step 2: [0, 4), [2, 6), [4, 8).
    assert outputs["chunk_scales"].shape == (1, 3) and outputs["chunk_scales"][0, 0] == 1.0
    assert outputs["chunk_transforms"].shape == (1, 3, 4, 4)
    assert outputs["frame_type"][0].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    assert outputs["is_keyframe"][0].tolist() == [1] * FRAMES
    quaternions = outputs["pose_enc"][0, :, 3:7]
    torch.testing.assert_close(quaternions.norm(dim=-1), torch.ones(FRAMES))


def test_overlap_is_resolved_like_the_reference(images):
    assert window_overlap(images, 2, {}) == 2
    assert window_overlap(images, 3, {"overlap_size": 1}) == 1
    assert window_overlap(images, 4, {"overlap_keyframes": 1, "keyframe_interval": 3}) == 4
    assert window_overlap(images[:3], 4, {"overlap_size": 4}) == 2
    with pytest.raises(NotImplementedError, match="longer than the scale phase"):
        window_overlap(images, 2, {"overlap_keyframes": 2, "keyframe_interval": 2})


def test_the_weights_module_is_looked_for_next_to_the_fixture(tmp_path, capsys):
    from safetensors.torch import save_file

    from gct_stream_ros.tools.parity import main

    fixture = tmp_path / "golden.safetensors"
    save_file({"unused": torch.zeros(1)}, str(fixture))
    fixture.with_suffix(".json").write_text('{"scenarios": []}')
    assert main([str(fixture)]) == 1
    assert f"weights module not found: {tmp_path / 'weights.py'}" in capsys.readouterr().err
    other = tmp_path / "elsewhere.py"
    assert main([str(fixture), "--weights-module", str(other)]) == 1
    assert f"weights module not found: {other}" in capsys.readouterr().err
