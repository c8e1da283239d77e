"""Budgeted caches on CUDA: the attention mass of bf16 keys, and steps that never wait for the device.

Run on a GPU machine: ``pytest -q test/gpu/test_cache_policies_gpu.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared step driver lives in test/
from cache_steps import SPECIALS, random_schedule, run_step, step_tensors  # noqa: E402

from gct_stream_ros.cache.policies import budgeted_cache  # noqa: E402
from gct_stream_ros.cache.policies.attention_mass import attention_mass, stand_in_queries  # noqa: E402
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache  # noqa: E402
from gct_stream_ros.cache.policies.policy import policy_preset  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

LAYERS, HEADS, DIM, PATCHES = 3, 4, 64, 40
TOKENS = SPECIALS + PATCHES


@pytest.mark.parametrize("mode", ["sampled", "exact"])
def test_bf16_attention_mass_on_cuda_matches_the_float64_reference(mode):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(TOKENS, HEADS, DIM, generator=gen).bfloat16()
    keys = torch.randn(5000, HEADS, DIM, generator=gen).bfloat16()
    queries, weights = stand_in_queries(q, SPECIALS, mode)
    logits = torch.einsum("qhd,khd->hqk", queries.double(), keys.double()) * DIM**-0.5
    reference = (logits.softmax(dim=-1) * weights.double().view(1, -1, 1)).sum(dim=1).mean(dim=0)
    cuda_queries, cuda_weights = stand_in_queries(q.cuda(), SPECIALS, mode)
    mass = attention_mass(cuda_queries, cuda_weights, keys.cuda(), chunk_elements=HEADS * 70 * 1000)
    assert mass.dtype == torch.float32
    torch.testing.assert_close(mass.cpu().double(), reference, rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("policy", ["evict3r", "infinitevggt"])
@pytest.mark.parametrize("reallocate", [True, False])
def test_budgeted_steps_never_synchronize(policy, reallocate, monkeypatch):
    if not reallocate:
        monkeypatch.setattr(budgeted_cache, "REALLOCATE_EVERY", 10**9)
    cache = BudgetedKVCache(LAYERS, HEADS, DIM, policy_preset(policy), SPECIALS, 2, 0, 5, 12, device="cuda",
                            dtype=torch.bfloat16, budget=0.6)
    gen = torch.Generator().manual_seed(1)
    schedule = [step for step in random_schedule(2, 120, max_phase1=2) if step.kind != "reset"]
    inputs = [[tuple(t.cuda() for t in layer)
               for layer in step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM, torch.bfloat16)]
              for step in schedule]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step, tensors in zip(schedule, inputs):
            run_step(cache, step, tensors)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    budgets = cache.stats().budget_tokens_per_layer
    assert all(cache.patch_tokens(layer) <= budget for layer, budget in enumerate(budgets))
