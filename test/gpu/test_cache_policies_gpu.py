"""Budgeted caches on CUDA: the attention mass of bf16 keys, and steps that never wait for the device.

Run on a GPU machine: ``pytest -q test/gpu/test_cache_policies_gpu.py``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared step driver lives in test/
from cache_steps import (  # noqa: E402
    SPECIALS,
    count_prefix_captures,
    random_schedule,
    run_step,
    step_tensors,
)

from gct_stream_ros.cache.attention import dense_attention  # noqa: E402
from gct_stream_ros.cache.policies import budgeted_cache, fused_scores, pool_attention  # noqa: E402
from gct_stream_ros.cache.policies.attention_mass import attention_mass, stand_in_queries  # noqa: E402
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache  # noqa: E402
from gct_stream_ros.cache.policies.policy import policy_preset  # noqa: E402
from gct_stream_ros.cache.policies.scorers import diversity_scores, mass_scores  # noqa: E402
from gct_stream_ros.cache.policies.temporal_rope import rotate_temporal  # noqa: E402
from gct_stream_ros.cache.policies.token_pool import PATCH, SPECIAL, TokenPool, state_scores  # noqa: E402

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
    """Every step that does not capture a new attention graph runs without a synchronising call (a
    capture waits for the device once: ``pool_attention.py``)."""
    if not reallocate:
        monkeypatch.setattr(budgeted_cache, "REALLOCATE_EVERY", 10**9)
    captures = count_prefix_captures(monkeypatch)
    cache = BudgetedKVCache(LAYERS, HEADS, DIM, policy_preset(policy), SPECIALS, 2, 0, 5, 12, device="cuda",
                            dtype=torch.bfloat16, budget=0.6)
    gen = torch.Generator().manual_seed(1)
    schedule = [step for step in random_schedule(2, 120, max_phase1=2) if step.kind != "reset"]
    inputs = [[tuple(t.cuda() for t in layer)
               for layer in step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM, torch.bfloat16)]
              for step in schedule]
    torch.cuda.synchronize()
    unexpected = []
    torch.cuda.set_sync_debug_mode("warn")
    try:
        for number, (step, tensors) in enumerate(zip(schedule, inputs)):
            captured_before = len(captures)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                run_step(cache, step, tensors)
            synchronising = [w for w in caught if "synchroniz" in str(w.message)]
            if synchronising and len(captures) == captured_before:
                unexpected.append((number, step.kind, str(synchronising[0].message)))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert not unexpected
    assert captures  # the captured path ran
    budgets = cache.stats().budget_tokens_per_layer
    assert all(cache.patch_tokens(layer) <= budget for layer, budget in enumerate(budgets))


@pytest.mark.parametrize("heads", [HEADS, 16])
@pytest.mark.parametrize("in_use", [None, 2345])
def test_fused_diversity_ranking_matches_the_torch_scorer(in_use, heads):
    """With ``in_use`` (a fixed-shape step's count on the device) the slots from it on rank as ``FREE``."""
    gen = torch.Generator().manual_seed(2)
    count = 3000
    frames = torch.randint(0, 2000, (count, heads), generator=gen).int()
    content = torch.randn(1, heads, DIM, generator=gen) + 0.5 * torch.randn(count, heads, DIM, generator=gen)
    keys = rotate_temporal(content, frames).bfloat16()
    stored = torch.randint(0, 5, (count, heads), dtype=torch.uint8, generator=gen)
    stored[:2000] = PATCH
    pool = TokenPool(count, heads, DIM, torch.bfloat16, torch.device("cpu"))
    pool.state.copy_(stored)
    state = stored if in_use is None else pool.in_use(torch.tensor(in_use))
    scores, diversity = diversity_scores(keys.float(), frames, state == PATCH)
    reference = state_scores(scores, state).t()
    num_keys = None if in_use is None else torch.tensor(in_use, dtype=torch.int32, device="cuda")
    ranking, fused_diversity = fused_scores.diversity_ranking(keys.cuda(), frames.cuda(), stored.cuda(),
                                                              num_keys=num_keys)
    ranking = ranking.cpu()
    assert ranking.is_contiguous() and ranking.shape == (heads, count)
    scored = torch.isfinite(reference) & (reference > torch.finfo(torch.float32).min)
    torch.testing.assert_close(ranking[scored], reference[scored], rtol=1e-4, atol=1e-5)
    assert torch.equal(ranking[~scored], reference[~scored])
    torch.testing.assert_close(fused_diversity.cpu(), diversity, rtol=1e-4, atol=1e-6)


def test_pool_attention_equals_dense_attention_over_the_prefix():
    gen = torch.Generator().manual_seed(3)
    keys, values = (torch.randn(2000, HEADS, DIM, generator=gen).bfloat16().cuda() for _ in range(2))
    attention = pool_attention.PoolAttention()
    quantum = 160
    # flash only (fewer keys than the prefix), captured + rest, the same graph, a recapture, no prefix
    for length, budget in ((300, 500), (700, 500), (900, 560), (1500, 1400), (1500, 100)):
        q = torch.randn(TOKENS, HEADS, DIM, generator=gen).bfloat16().cuda()
        out = attention(0, q, keys, values, length, budget, quantum)  # [1, H, P, D]
        reference = dense_attention(q.float().unsqueeze(0), keys[:length].float(), values[:length].float())
        torch.testing.assert_close(out.transpose(1, 2).float(), reference, rtol=2e-2, atol=1e-2)


def test_fused_pool_writes_and_moves_match_the_torch_ops():
    gen = torch.Generator().manual_seed(4)
    pools = [TokenPool(200, HEADS, DIM, torch.bfloat16, torch.device(device)) for device in ("cpu", "cuda")]
    k, v = (torch.randn(2, TOKENS, HEADS, DIM, generator=gen).bfloat16() for _ in range(2))
    mass, exposure = (torch.rand(2 * TOKENS, HEADS, generator=gen) for _ in range(2))
    slots = torch.stack([torch.randperm(2 * TOKENS, generator=gen)[:50] for _ in range(HEADS)], dim=1)
    for pool in pools:
        device = pool.keys.device
        pool.append_frame(k[0].to(device), v[0].to(device), 3, SPECIALS, PATCH)  # one launch on CUDA
        pool.append(k[1, SPECIALS:].to(device), v[1, SPECIALS:].to(device), [(PATCHES, 4, PATCH)])
        pool.append(k[1, :SPECIALS].to(device), v[1, :SPECIALS].to(device), [(SPECIALS, 4, SPECIAL)])
        pool.mass[:2 * TOKENS], pool.exposure[:2 * TOKENS] = mass.to(device), exposure.to(device)
        pool.remove(slots.to(device))
    cpu, cuda = pools
    assert cpu.length == cuda.length == 2 * TOKENS - 50
    for expected, fused in zip(cpu.fields(), cuda.fields(), strict=True):
        assert torch.equal(fused[:cpu.length].cpu(), expected[:cpu.length])


def test_fused_mass_ranking_matches_the_torch_ranking():
    gen = torch.Generator().manual_seed(5)
    mass = torch.rand(500, HEADS, generator=gen)
    exposure = torch.randint(0, 4, (500, HEADS), generator=gen).float()
    state = torch.randint(0, 5, (500, HEADS), dtype=torch.uint8, generator=gen)
    reference = state_scores(mass_scores(mass[:, :1], exposure[:, :1]), state[:, :1])
    assert torch.equal(fused_scores.mass_ranking(mass.cuda(), exposure.cuda(), state.cuda()).cpu(), reference)


def test_fused_device_addressed_writes_and_removal_match_the_host_addressed_torch_ops():
    """The fixed-shape step's forms: slot, frame and lengths read from the device (``write_frame_at``,
    ``remove(slots, lengths)``) give what the host-addressed torch ops give."""
    gen = torch.Generator().manual_seed(6)
    k, v = (torch.randn(2, TOKENS, HEADS, DIM, generator=gen).bfloat16() for _ in range(2))
    cpu = TokenPool(200, HEADS, DIM, torch.bfloat16, torch.device("cpu"))
    cuda = TokenPool(200, HEADS, DIM, torch.bfloat16, torch.device("cuda"))
    for frame in range(2):
        cpu.append_frame(k[frame], v[frame], 7 + frame, SPECIALS, PATCH)
        at = torch.tensor(cuda.length, dtype=torch.int32, device="cuda")
        cuda.write_frame_at(k[frame].cuda(), v[frame].cuda(), at,
                            torch.tensor(7 + frame, dtype=torch.int32, device="cuda"), SPECIALS, PATCH)
        cuda.length += TOKENS
    slots = torch.stack([torch.randperm(2 * TOKENS, generator=gen)[:30] for _ in range(HEADS)], dim=1)
    cpu.remove(slots)
    cuda.remove(slots.cuda(), torch.tensor([2 * TOKENS, 2 * TOKENS - 30], dtype=torch.int32, device="cuda"))
    for expected, fused in zip(cpu.fields(), cuda.fields(), strict=True):
        assert torch.equal(fused[:cpu.length].cpu(), expected[:cpu.length])


def test_fused_attention_mass_over_a_device_count_matches_the_mass_over_the_prefix():
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(TOKENS, HEADS, DIM, generator=gen).bfloat16().cuda()
    keys = torch.randn(5000, HEADS, DIM, generator=gen).bfloat16().cuda()
    queries, weights = stand_in_queries(q, SPECIALS, "sampled")
    for count in (1000, 3071, 4097):  # whole chunks of keys past the count, and a chunk cut by it
        mass = attention_mass(queries, weights, keys, num_keys=torch.tensor(count, dtype=torch.int32,
                                                                            device="cuda"))
        assert mass.shape == (5000,) and not mass[count:].any()
        torch.testing.assert_close(mass[:count], attention_mass(queries, weights, keys[:count]),
                                   rtol=1e-5, atol=1e-7)
