"""The caches inside the tiny GCT model: paged gather equals dense bit for bit; policies run."""

from __future__ import annotations

import torch

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.cache.factory import CacheSettings, build_cache

SCHEDULE = [StepMode.STORE, StepMode.SKIP, StepMode.STORE, StepMode.DEFER, StepMode.STORE, StepMode.DEFER,
            StepMode.STORE]


def _run(model, images: torch.Tensor) -> list[torch.Tensor]:
    """Phase 1 on two frames, then one frame per mode (DEFERs alternately committed/rolled back)."""
    outputs = [model.step(images[:2]).pose_enc]
    for i, mode in enumerate(SCHEDULE):
        outputs.append(model.step(images[2 + i:3 + i], mode).pose_enc)
        if mode is StepMode.DEFER and i % 4 == 3:
            model.commit()
        elif mode is StepMode.DEFER:
            model.rollback()
    return outputs


def _cache(model, backend: str, policy: str = "sliding_window"):
    c = model.config
    settings = CacheSettings(policy=policy, scale_frames=c.scale_frames, sliding_window=c.sliding_window,
                             max_frames=c.max_frames, num_special_tokens=c.num_special_tokens)
    return build_cache(settings, c.depth, c.num_heads, c.head_dim, backend=backend)


def test_paged_gather_equals_dense_inside_the_model(tiny_model, frames):
    images = frames(2 + len(SCHEDULE))
    dense_model = tiny_model()
    reference = _run(dense_model, images)
    paged_model = tiny_model()
    paged_model.cache = _cache(paged_model, "paged_gather")
    for ours, theirs in zip(_run(paged_model, images), reference):
        assert torch.equal(ours, theirs)
    assert paged_model.cache_stats().tokens_per_layer == dense_model.cache_stats().tokens_per_layer


def test_budgeted_policies_drive_the_model(tiny_model, frames):
    images = frames(2 + len(SCHEDULE))
    for policy in ("evict3r", "infinitevggt"):
        model = tiny_model()
        model.cache = _cache(model, "auto", policy)
        outputs = _run(model, images)
        assert all(torch.isfinite(pose).all() for pose in outputs)
        assert model.cache_stats().policy == policy
