"""Whole steps replayed from CUDA graphs equal the same steps run eagerly, and wait for nothing:
with the contiguous sliding window and with the budgeted caches.

Run on a GPU machine: ``python3 -m pytest -q test/gpu/test_step_graphs_gpu.py``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared cache test helpers live in test/
from cache_steps import count_prefix_captures  # noqa: E402

from gct_stream_ros.cache.base import GlobalKVCache, StepMode  # noqa: E402
from gct_stream_ros.cache.contiguous_cache import ContiguousKVCache  # noqa: E402
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache  # noqa: E402
from gct_stream_ros.cache.policies.policy import policy_preset  # noqa: E402
from gct_stream_ros.model.config import GCTConfig  # noqa: E402
from gct_stream_ros.model.gct import GCTModel  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

SCALE, WINDOW, FRAMES = 2, 3, 40
BUDGETED_MAX_FRAMES, BUDGETED_FRAMES = 16, 48
"""Budgeted streams: frames recycled from frame 16 on, re-allocations every 8 stored frames."""


def _contiguous(config: GCTConfig) -> ContiguousKVCache:
    return ContiguousKVCache(config.depth, config.num_heads, config.head_dim, config.num_special_tokens,
                             SCALE, WINDOW, config.max_frames, device="cuda", dtype=torch.bfloat16)


def _model(graphs: bool, compiled: bool, policy: str | None = None,
           window_max_frames: int = 0, evict_every: int = 1) -> GCTModel:
    torch.manual_seed(0)
    max_frames = window_max_frames if policy is None else BUDGETED_MAX_FRAMES
    config = GCTConfig.preset("tiny", scale_frames=SCALE, sliding_window=WINDOW, max_frames=max_frames)
    cache: GlobalKVCache = _contiguous(config) if policy is None else BudgetedKVCache(
        config.depth, config.num_heads, config.head_dim, policy_preset(policy), config.num_special_tokens,
        SCALE, sliding_window=WINDOW, max_frames=max_frames, device="cuda", dtype=torch.bfloat16, budget=0.8,
        evict_every=evict_every)
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


@pytest.mark.parametrize(("max_frames", "captures"), [(0, 3), (10, 4)],
                         ids=["specials grow", "specials full"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_replayed_steps_equal_eager_steps_without_a_host_sync(compiled, max_frames, captures):
    images = torch.rand(FRAMES, 3, 42, 56, generator=torch.Generator().manual_seed(1)).cuda()
    eager = _stream(_model(graphs=False, compiled=compiled, window_max_frames=max_frames), images,
                    sync_check_from=FRAMES)
    replaying = _model(graphs=True, compiled=compiled, window_max_frames=max_frames)
    # every key is captured by frame 20: the window filling, full for keyframes, full + 1 for the others;
    # with max_frames 10 the specials fill at frame 10, before the first non-keyframe (13): the window
    # filling, keyframes before that, then keyframes and the others over the whole range
    replayed = _stream(replaying, images, sync_check_from=20)
    graphs = replaying.step_graphs
    assert graphs.captures == captures and graphs.replays >= FRAMES - SCALE - 8
    for index, (a, b) in enumerate(zip(eager, replayed, strict=True)):
        for name in ("pose_enc", "depth", "depth_conf"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-3, atol=1e-4,
                                       msg=lambda m, index=index, name=name: f"frame {index} {name}: {m}")


def _budgeted_modes():
    """Mostly keyframes, a skipped and a deferred frame (kept or dropped) now and then."""
    for index in range(SCALE, BUDGETED_FRAMES):
        if index % 9 == 0:
            yield index, StepMode.SKIP
        elif index % 13 == 0:
            yield index, StepMode.DEFER
        else:
            yield index, StepMode.STORE


@pytest.mark.parametrize("evict_every", [1, 2])
@pytest.mark.parametrize("policy", ["evict3r", "infinitevggt"])
def test_budgeted_steps_replayed_equal_eager_steps_without_a_host_sync(policy, evict_every, monkeypatch):
    """Budgets re-allocated every 8 stored frames, frames recycled by max_frames from frame 16 on: the
    replayed stream equals the eager one, and no step synchronises with the host except the ones that
    capture a graph (a step's, or a layer's cuDNN prefix when a re-allocation moved it)."""
    captures = count_prefix_captures(monkeypatch)
    images = torch.rand(BUDGETED_FRAMES, 3, 42, 56, generator=torch.Generator().manual_seed(1)).cuda()
    streams, synchronising = [], []
    for graphs in (False, True):
        model = _model(graphs=graphs, compiled=False, policy=policy, evict_every=evict_every)
        outputs = [model.step(images[:SCALE])]
        for index, mode in _budgeted_modes():
            before = (len(captures), model.step_graphs.captures if graphs else 0)
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    outputs.append(model.step(images[index:index + 1], mode))
                    if mode is StepMode.DEFER:
                        model.commit() if index % 2 else model.rollback()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            captured = before != (len(captures), model.step_graphs.captures if graphs else 0)
            if index >= 8 and not captured and any("synchroniz" in str(w.message) for w in caught):
                synchronising.append((graphs, index, mode))
        streams.append(outputs)
        if graphs:
            replayed = model.step_graphs
    assert not synchronising
    # the window-filling and recycling keys at least; every other steady step replays
    assert replayed.captures >= 2 and replayed.replays >= 10
    for index, (a, b) in enumerate(zip(*streams, strict=True)):
        for name in ("pose_enc", "depth", "depth_conf"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-3, atol=1e-4,
                                       msg=lambda m, index=index, name=name: f"frame {index} {name}: {m}")
