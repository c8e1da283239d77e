"""Memory policies: budgets hold at every step, invariants, composition, and each part alone."""

from __future__ import annotations

import pytest
import torch
from cache_steps import SPECIALS, Step, random_schedule, run_step, step_tensors

from gct_stream_ros.cache.dense import DenseKVCache
from gct_stream_ros.cache.policies.allocators import layer_budgets
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache
from gct_stream_ros.cache.policies.policy import PRESETS, CachePolicy, policy_preset
from gct_stream_ros.cache.policies.scorers import attention_mass, diversity_scores, sampled_queries
from gct_stream_ros.cache.policies.selection import kept_positions
from gct_stream_ros.cache.policies.temporal_rope import rotate_temporal

LAYERS, HEADS, DIM, PATCHES = 3, 2, 64, 8
TOKENS = SPECIALS + PATCHES
SCALE, WINDOW, MAX_FRAMES = 2, 3, 9
BUDGET = (SCALE + 3) * PATCHES + 5  # not a whole number of frames, on purpose

COMPOSED = [PRESETS["evict3r"], PRESETS["infinitevggt"],
            CachePolicy("diversity_frames", scorer="key_diversity", granularity="frame"),
            CachePolicy("mass_frames_uniform", scorer="attention_mass", granularity="frame", timing="after"),
            CachePolicy("recency_tokens", granularity="token", timing="after")]


def _budgeted(policy: CachePolicy, budget: int = BUDGET, max_frames: int = MAX_FRAMES) -> BudgetedKVCache:
    return BudgetedKVCache(LAYERS, HEADS, DIM, policy, SPECIALS, SCALE, budget, WINDOW, max_frames)


@pytest.mark.parametrize("policy", COMPOSED, ids=lambda p: p.name)
def test_every_policy_keeps_its_budget_at_every_step(policy):
    cache = _budgeted(policy)
    gen = torch.Generator().manual_seed(0)
    schedule = random_schedule(1, 1000, max_phase1=SCALE)
    for step in schedule:
        run_step(cache, step, step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM))
        stats = cache.stats()
        assert sum(stats.budget_tokens_per_layer) <= LAYERS * BUDGET
        for layer, (tokens, budget) in enumerate(zip(stats.tokens_per_layer, stats.budget_tokens_per_layer)):
            patches = cache._patches[layer]
            assert len(patches) <= budget
            assert tokens <= budget + SPECIALS * MAX_FRAMES
            # every frame with patches keeps its specials; scale frames keep all their patches
            specials = cache._specials[layer].tokens
            assert set(patches.frames.tolist()) <= set(specials.frames.tolist())
            in_order = [frame for frame in cache._specials[layer].frames for _ in range(SPECIALS)]
            assert specials.frames.tolist() == in_order
            assert int((patches.frames < SCALE).sum()) == min(cache.frames_stored, SCALE) * PATCHES
    assert stats.frames_evicted > 0 and stats.specials_dropped > 0


@pytest.mark.parametrize("policy", ["evict3r", "infinitevggt"])
def test_presets_give_layers_different_budgets(policy):
    cache = _budgeted(policy_preset(policy))
    gen = torch.Generator().manual_seed(2)
    for step in random_schedule(3, 40, max_phase1=SCALE):
        run_step(cache, step, step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM))
    budgets = cache.stats().budget_tokens_per_layer
    assert len(set(budgets)) > 1 and min(budgets) >= SCALE * PATCHES


def test_recency_frames_with_the_window_budget_is_the_sliding_window():
    cache = _budgeted(policy_preset("sliding_window"), budget=0)
    dense = DenseKVCache(LAYERS, SPECIALS, SCALE, WINDOW, MAX_FRAMES)
    gen = torch.Generator().manual_seed(4)
    for step in random_schedule(5, 200, max_phase1=SCALE + 1):
        tensors = step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM)
        for ours, reference in zip(run_step(cache, step, tensors), run_step(dense, step, tensors)):
            assert torch.equal(ours, reference)
        assert cache.stats().tokens_per_layer == dense.stats().tokens_per_layer


@pytest.mark.parametrize("policy", COMPOSED, ids=lambda p: p.name)
def test_rollback_and_skip_leave_no_trace(policy):
    cache = _budgeted(policy)
    gen = torch.Generator().manual_seed(6)
    run_step(cache, Step("phase1", SCALE), step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM))
    for _ in range(12):
        run_step(cache, Step("store"), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
    for kind in ("rollback", "skip"):
        def state() -> list[torch.Tensor]:
            tokens = cache._patches + [specials.tokens for specials in cache._specials]
            return [field.clone() for t in tokens for field in t._fields()] + [torch.stack(cache._statistics)]

        before = (cache.stats(), state())
        run_step(cache, Step(kind), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
        assert cache.stats() == before[0]
        assert all(torch.equal(now, then) for now, then in zip(state(), before[1], strict=True))


def test_commit_applies_the_deferred_eviction():
    cache = _budgeted(policy_preset("infinitevggt"))
    gen = torch.Generator().manual_seed(7)
    run_step(cache, Step("phase1", SCALE), step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM))
    for _ in range(8):
        run_step(cache, Step("store"), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
    run_step(cache, Step("commit"), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
    stats = cache.stats()
    assert all(len(p) <= b for p, b in zip(cache._patches, stats.budget_tokens_per_layer))
    assert cache.frames_stored == SCALE + 9


def test_budget_below_the_scale_frames_is_rejected():
    cache = _budgeted(policy_preset("evict3r"), budget=SCALE * PATCHES - 1)
    with pytest.raises(ValueError, match="budget_tokens"):
        run_step(cache, Step("phase1", SCALE),
                 step_tensors(torch.Generator(), LAYERS, SCALE, TOKENS, HEADS, DIM))


# -- the parts -------------------------------------------------------------------------------

def test_allocators_split_a_fixed_total_in_the_published_directions():
    stats = [0.1, 0.5, 2.0]
    assert layer_budgets("uniform", stats, 100, 20, 0.5) == [100, 100, 100]
    by_variance = layer_budgets("variance", stats, 100, 20, 0.5)
    by_diversity = layer_budgets("diversity", stats, 100, 20, 0.5)
    assert by_variance[0] > by_variance[1] > by_variance[2] >= 20
    assert by_diversity[0] < by_diversity[1] < by_diversity[2]
    assert 297 <= sum(by_variance) <= 300 and 297 <= sum(by_diversity) <= 300
    assert layer_budgets("diversity", [0.0] * 3, 100, 20, 0.5) == [100, 100, 100]


def test_token_selection_drops_the_lowest_unprotected_tokens():
    scores = torch.tensor([0.0, 5.0, 1.0, 3.0, 2.0, 2.0])
    frames = torch.tensor([0, 1, 1, 2, 2, 3])
    assert kept_positions(scores, 1, frames, 3, "token").tolist() == [0, 1, 3]
    assert kept_positions(scores, 1, frames, 4, "token").tolist() == [0, 1, 3, 5]  # the tie: older goes
    assert kept_positions(scores, 2, frames, 3, "token").tolist() == [0, 1, 3]  # position 1 protected
    assert kept_positions(scores, 1, frames, 6, "token") is None


def test_frame_selection_drops_whole_frames_by_mean_score():
    scores = torch.tensor([0.0, 5.0, 1.0, 3.0, 2.0, 9.0])
    frames = torch.tensor([0, 1, 1, 2, 2, 3])
    # frame means: 1 -> 3.0, 2 -> 2.5, 3 -> 9.0: frame 2 goes first, then frame 1
    assert kept_positions(scores, 1, frames, 4, "frame").tolist() == [0, 1, 2, 5]
    assert kept_positions(scores, 1, frames, 3, "frame").tolist() == [0, 5]


def test_temporal_rotation_is_undone_and_spares_the_spatial_bands():
    gen = torch.Generator().manual_seed(8)
    content = torch.randn(4, HEADS, DIM, generator=gen)
    frames = torch.tensor([0, 3, 70, 1500])
    rotated = rotate_temporal(content, frames)
    assert torch.allclose(rotate_temporal(rotated, frames, inverse=True), content, atol=1e-5)
    assert torch.equal(rotated[..., 20:], content[..., 20:])
    assert not torch.allclose(rotated[1:, :, :20], content[1:, :, :20], atol=1e-3)


def test_diversity_ignores_time_and_prefers_the_odd_key():
    gen = torch.Generator().manual_seed(9)
    common = torch.randn(1, HEADS, DIM, generator=gen)
    keys = common.repeat(6, 1, 1)
    keys[4] = -common[0]
    frames = torch.arange(6) * 50
    scores, diversity = diversity_scores(rotate_temporal(keys, frames), frames)
    assert int(scores.argmax()) == 4
    assert torch.allclose(scores[[0, 1, 2, 3, 5]], scores[0].expand(5), atol=1e-5)
    assert diversity > 0


def test_attention_mass_goes_to_the_matching_key_and_sums_to_the_queries():
    queries = torch.zeros(TOKENS, HEADS, DIM)
    queries[..., 0] = 4.0
    keys = torch.zeros(10, HEADS, DIM)
    keys[7, :, 0] = 4.0
    sampled = sampled_queries(queries, SPECIALS)
    assert sampled.shape[0] == SPECIALS + 1  # 8 patches pool into one group of up to 16
    mass, variance = attention_mass(sampled, keys)
    assert int(mass.argmax()) == 7 and variance > 0
    assert torch.isclose(mass.sum() / keys.shape[0], torch.tensor(float(sampled.shape[0])))


@pytest.mark.parametrize("kwargs", [dict(scorer="attention_mass", timing="before"),
                                    dict(allocator="variance"), dict(scorer="magic"), dict(temperature=0.0)])
def test_inconsistent_compositions_are_rejected(kwargs):
    with pytest.raises(ValueError):
        CachePolicy("bad", **kwargs)


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match="sliding_window"):
        policy_preset("lru")
