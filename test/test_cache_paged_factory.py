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
from gct_stream_ros.stream.config import ConfigError, EngineConfig


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


@pytest.mark.parametrize(("policy", "evict_every", "cadence"), [
    ("evict3r", 0, 1), ("infinitevggt", 0, 2), ("infinitevggt", 1, 1), ("evict3r", 3, 3),
    (CachePolicy("custom", scorer="key_diversity", granularity="token", evict_every=4), 0, 4)])
def test_the_eviction_cadence_is_the_policys_unless_set(policy, evict_every, cadence):
    cache = build_cache(CacheSettings(policy=policy, evict_every=evict_every), 2, 2, 64)
    assert cache.evict_every == cache.steady_graph_keys == cadence
    if isinstance(policy, str):
        config = EngineConfig(cache_policy=policy, cache_evict_every=evict_every).validate()
        assert build_cache(config, 2, 2, 64).evict_every == cadence


@pytest.mark.parametrize("evict_every", [-1, 9])
def test_an_eviction_cadence_out_of_range_is_rejected_in_one_line(evict_every):
    reason = rf"evict_every={evict_every} must be 0 \(the policy's own cadence\) or between 1 .* and 8$"
    with pytest.raises(ConfigError, match=f"^cache_{reason}"):
        EngineConfig(cache_policy="evict3r", cache_evict_every=evict_every).validate()
    with pytest.raises(ValueError, match=f"^{reason}"):
        build_cache(CacheSettings(policy="infinitevggt", evict_every=evict_every), 2, 2, 64)
    with pytest.raises(ValueError, match="evict_every must be between 1 and 8"):
        CachePolicy("custom", evict_every=0 if evict_every < 0 else evict_every)  # a policy has its own


def test_budgeted_policies_refuse_flashinfer_and_unknown_backends_are_rejected():
    with pytest.raises(ValueError, match="auto"):
        build_cache(CacheSettings(policy="evict3r"), 2, 2, 64, backend="flashinfer")
    with pytest.raises(ValueError, match="paged_gather"):
        build_cache(CacheSettings(), 2, 2, 64, backend="triton")


@pytest.mark.skipif(flashinfer_available(), reason="checks the error raised when flashinfer is missing")
def test_explicit_flashinfer_without_flashinfer_explains_itself():
    with pytest.raises(ImportError, match="flashinfer"):
        build_cache(CacheSettings(), 2, 2, 64, dtype=torch.bfloat16, backend="flashinfer")
