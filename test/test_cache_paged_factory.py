"""build_cache: backend and policy choices from EngineConfig or explicit settings."""

from __future__ import annotations

import pytest
import torch

from gct_stream_ros.cache.dense import DenseKVCache
from gct_stream_ros.cache.factory import CacheSettings, build_cache
from gct_stream_ros.cache.paged_flashinfer import flashinfer_available
from gct_stream_ros.cache.paged_gather import PagedGatherCache
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache
from gct_stream_ros.cache.policies.policy import CachePolicy
from gct_stream_ros.stream.config import EngineConfig


def test_engine_config_defaults_give_the_paged_sliding_window_on_cpu():
    config = EngineConfig(num_scale_frames=4, cache_sliding_window=16, cache_max_frames=40)
    cache = build_cache(config, num_layers=2, num_heads=2, head_dim=64)
    assert isinstance(cache, PagedGatherCache)
    assert (cache.scale_frames, cache.sliding_window, cache.max_frames) == (4, 16, 40)
    assert cache.stats().policy == "sliding_window"


def test_auto_falls_back_to_gather_without_cuda_even_in_bf16():
    cache = build_cache(CacheSettings(), 2, 2, 64, device="cpu", dtype=torch.bfloat16)
    assert isinstance(cache, PagedGatherCache) and cache.dtype == torch.bfloat16


def test_dense_backend_is_available_for_the_sliding_window():
    assert isinstance(build_cache(CacheSettings(), 2, 2, 64, backend="dense"), DenseKVCache)


@pytest.mark.parametrize("policy", ["evict3r", "infinitevggt",
                                    CachePolicy("custom", scorer="key_diversity", granularity="frame")])
def test_other_policies_run_on_the_budgeted_cache(policy):
    cache = build_cache(CacheSettings(policy=policy, budget_tokens=500), 2, 2, 64)
    assert isinstance(cache, BudgetedKVCache)
    assert cache.budget_tokens == 500
    assert cache.stats().policy == (policy if isinstance(policy, str) else policy.name)


def test_engine_config_policy_and_budget_are_forwarded():
    config = EngineConfig(cache_policy="infinitevggt", cache_budget_tokens=1234)
    cache = build_cache(config, 2, 2, 64)
    assert isinstance(cache, BudgetedKVCache) and cache.budget_tokens == 1234
    cache = build_cache(EngineConfig(cache_policy="evict3r", cache_budget=0.25), 2, 2, 64)
    assert cache.budget == 0.25 and cache.budget_tokens == 0


def test_budgeted_policies_refuse_flashinfer_and_unknown_backends_are_rejected():
    with pytest.raises(ValueError, match="auto"):
        build_cache(CacheSettings(policy="evict3r"), 2, 2, 64, backend="flashinfer")
    with pytest.raises(ValueError, match="paged_gather"):
        build_cache(CacheSettings(), 2, 2, 64, backend="triton")


@pytest.mark.skipif(flashinfer_available(), reason="checks the error raised when flashinfer is missing")
def test_explicit_flashinfer_without_flashinfer_explains_itself():
    with pytest.raises(ImportError, match="flashinfer"):
        build_cache(CacheSettings(), 2, 2, 64, dtype=torch.bfloat16, backend="flashinfer")
