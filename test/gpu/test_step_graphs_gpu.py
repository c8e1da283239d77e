"""Whole steps replayed from CUDA graphs equal the same steps run eagerly, and wait for nothing.

Run on a GPU machine: ``pytest -q test/gpu/test_step_graphs_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.cache.contiguous_cache import ContiguousKVCache
from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.gct import GCTModel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SCALE, WINDOW, FRAMES = 2, 3, 40


def _model(graphs: bool, compiled: bool) -> GCTModel:
    torch.manual_seed(0)
    config = GCTConfig.preset("tiny", scale_frames=SCALE, sliding_window=WINDOW, max_frames=0)
    cache = ContiguousKVCache(config.depth, config.num_heads, config.head_dim, config.num_special_tokens,
                              SCALE, WINDOW, device="cuda", dtype=torch.bfloat16)
    model = GCTModel(config, cache).cuda().eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("token", "tokens", "pos_embed", "gamma")):
                parameter.normal_(0.0, 0.2)
    model.to_inference_dtype(torch.bfloat16)
    if compiled:
        model.compile_regions()
    if graphs:
        model.replay_steps()
    return model


def _modes():
    """Keyframes, then a mix of skipped and deferred frames (kept or dropped) once the window is full."""
    for index in range(SCALE, FRAMES):
        if index < 12 or index % 4 == 0:
            yield index, StepMode.STORE
        else:
            yield index, (StepMode.SKIP, StepMode.DEFER)[index % 2]


def _stream(model: GCTModel, images: torch.Tensor, sync_check_from: int) -> list:
    outputs = [model.step(images[:SCALE])]
    for index, mode in _modes():
        if index == sync_check_from:
            torch.cuda.set_sync_debug_mode("error")
        try:
            outputs.append(model.step(images[index:index + 1], mode))
            if mode is StepMode.DEFER:
                model.commit() if index % 3 else model.rollback()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return outputs


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_replayed_steps_equal_eager_steps_without_a_host_sync(compiled):
    images = torch.rand(FRAMES, 3, 42, 56, generator=torch.Generator().manual_seed(1)).cuda()
    eager = _stream(_model(graphs=False, compiled=compiled), images, sync_check_from=FRAMES)
    replaying = _model(graphs=True, compiled=compiled)
    # every key (window filling, full for keyframes, full + 1 for the others) is captured by frame 20
    replayed = _stream(replaying, images, sync_check_from=20)
    graphs = replaying.step_graphs
    assert graphs.captures == 3 and graphs.replays >= FRAMES - SCALE - 6
    for index, (a, b) in enumerate(zip(eager, replayed, strict=True)):
        for name in ("pose_enc", "depth", "depth_conf"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-3, atol=1e-4,
                                       msg=lambda m, index=index, name=name: f"frame {index} {name}: {m}")
