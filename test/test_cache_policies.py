"""Memory policies: budgets hold at every step, invariants, composition, and each part alone."""

from __future__ import annotations

import math

import pytest
import torch
from cache_steps import SPECIALS, Step, kept_tokens, random_schedule, run_step, step_tensors

from gct_stream_ros.cache.attention import heads_first, partial_attention
from gct_stream_ros.cache.dense import DenseKVCache
from gct_stream_ros.cache.policies import budgeted_cache
from gct_stream_ros.cache.policies.allocators import layer_budgets, layer_ceiling
from gct_stream_ros.cache.policies.attention_mass import (
    POOL_GROUP,
    attention_mass,
    concentration,
    sampled_groups,
    stand_in_queries,
    stand_in_rows,
)
from gct_stream_ros.cache.policies.budget import check_budget
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache
from gct_stream_ros.cache.policies.fused_mass import QUERY_TILE
from gct_stream_ros.cache.policies.policy import PRESETS, CachePolicy, policy_preset
from gct_stream_ros.cache.policies.pool_attention import captured_prefix
from gct_stream_ros.cache.policies.scorers import diversity_scores
from gct_stream_ros.cache.policies.selection import evicted_slots
from gct_stream_ros.cache.policies.temporal_rope import rotate_temporal
from gct_stream_ros.cache.policies.token_pool import (
    EXPIRED_SPECIAL,
    PATCH,
    SCALE_PATCH,
    SPECIAL,
    TokenPool,
    state_scores,
)

LAYERS, HEADS, DIM, PATCHES = 3, 2, 64, 8
TOKENS = SPECIALS + PATCHES
SCALE, WINDOW, MAX_FRAMES = 2, 3, 9
BUDGET = (SCALE + 3) * PATCHES + 5  # not a whole number of frames, on purpose

COMPOSED = [PRESETS["evict3r"], PRESETS["infinitevggt"],
            CachePolicy("diversity_frames", scorer="key_diversity", granularity="frame"),
            CachePolicy("mass_frames_uniform", scorer="attention_mass", granularity="frame", timing="after"),
            CachePolicy("recency_tokens", granularity="token", timing="after"),
            CachePolicy("exact_mass", scorer="attention_mass", allocator="variance", granularity="token",
                        timing="after", mass_queries="exact")]


def _budgeted(policy: CachePolicy, budget_tokens: int = BUDGET, evict_every: int = 1,
              **kwargs) -> BudgetedKVCache:
    """Evicting at every stored frame unless asked (not at the policy's own cadence)."""
    return BudgetedKVCache(LAYERS, HEADS, DIM, policy, SPECIALS, SCALE, budget_tokens, WINDOW, MAX_FRAMES,
                           evict_every=evict_every, **kwargs)


@pytest.mark.parametrize("evict_every", [1, 3])
@pytest.mark.parametrize("policy", COMPOSED, ids=lambda p: p.name)
def test_every_policy_keeps_its_budget_at_every_step(policy, evict_every):
    """Within the budget after every step; with an eviction every ``k`` frames, within ``k - 1`` frames of it,
    and the specials of at most ``k - 1`` recycled frames wait for the next eviction."""
    cache = _budgeted(policy, evict_every=evict_every)
    slack = (evict_every - 1) * PATCHES
    gen = torch.Generator().manual_seed(0)
    evicted = dropped = 0
    for step in random_schedule(1, 150, max_phase1=SCALE):
        run_step(cache, step, step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM))
        stats = cache.stats()
        evicted, dropped = max(evicted, stats.frames_evicted), max(dropped, stats.specials_dropped)
        assert sum(stats.budget_tokens_per_layer) <= LAYERS * BUDGET
        for layer, (tokens, budget) in enumerate(zip(stats.tokens_per_layer, stats.budget_tokens_per_layer)):
            pool = cache._pools[layer]
            frames, state = pool.frames[:pool.length], pool.state[:pool.length]
            assert tokens == pool.length
            assert (state == EXPIRED_SPECIAL).sum() <= (evict_every - 1) * SPECIALS * HEADS
            for head in range(HEADS):
                # the host's count is the device's; every head holds the same count
                patches = int(((state[:, head] != SPECIAL) & (state[:, head] != EXPIRED_SPECIAL)).sum())
                assert patches == cache.patch_tokens(layer) <= budget + slack
                # each kept frame has its specials; scale frames keep all their patches
                kept = sorted(frames[state[:, head] == SPECIAL, head].tolist())
                assert kept == sorted(f for f in cache._special_frames for _ in range(SPECIALS))
                assert int((state[:, head] == SCALE_PATCH).sum()) == min(cache.frames_stored, SCALE) * PATCHES
    assert evicted > 0 and dropped > 0


@pytest.mark.parametrize("policy", ["evict3r", "infinitevggt"])
def test_presets_give_layers_different_budgets(policy, monkeypatch):
    monkeypatch.setattr(budgeted_cache, "BUDGET_MOVE_FRAMES", 0)  # the tiny layers' budgets differ by less
    cache = _budgeted(policy_preset(policy))
    gen = torch.Generator().manual_seed(2)
    run_step(cache, Step("phase1", SCALE), step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM))
    for _ in range(3 * budgeted_cache.REALLOCATE_EVERY):
        run_step(cache, Step("store"), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
    budgets = cache.stats().budget_tokens_per_layer
    assert len(set(budgets)) > 1
    assert min(budgets) >= SCALE * PATCHES and max(budgets) <= layer_ceiling(BUDGET, SCALE * PATCHES)


def test_a_reallocation_moves_the_budgets_only_by_a_frame_or_more(monkeypatch):
    cache = _budgeted(policy_preset("infinitevggt"))
    gen = torch.Generator().manual_seed(3)
    run_step(cache, Step("phase1", SCALE), step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM))
    budgets = cache.stats().budget_tokens_per_layer

    def reallocate(move: int) -> list[int]:
        """The budgets after the next re-allocation, whose targets move the first two layers by +-move."""
        targets = [budgets[0] + move, budgets[1] - move, *budgets[2:]]
        monkeypatch.setattr(budgeted_cache, "layer_budgets", lambda *args: list(targets))
        for _ in range(budgeted_cache.REALLOCATE_EVERY):
            run_step(cache, Step("store"), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
        return cache.stats().budget_tokens_per_layer

    assert reallocate(0) == budgets  # the first period only takes the statistics' snapshot
    assert reallocate(PATCHES - 1) == budgets
    moved = reallocate(PATCHES)
    assert moved == [budgets[0] + PATCHES, budgets[1] - PATCHES, *budgets[2:]]
    assert [cache.patch_tokens(layer) for layer in range(LAYERS)] == moved


def test_recency_frames_with_the_window_budget_is_the_sliding_window():
    cache = _budgeted(policy_preset("sliding_window"), budget_tokens=0)
    dense = DenseKVCache(LAYERS, SPECIALS, SCALE, WINDOW, MAX_FRAMES)
    gen = torch.Generator().manual_seed(4)
    for step in random_schedule(5, 120, max_phase1=SCALE + 1):
        tensors = step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM)
        for ours, reference in zip(run_step(cache, step, tensors), run_step(dense, step, tensors)):
            # the same keys in another order: equal up to the order of the float sums
            torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
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
            return [field[:pool.length].clone() for pool in cache._pools for field in pool.fields()] + [
                cache._statistics.clone()]

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
    assert all(cache.patch_tokens(layer) <= b for layer, b in enumerate(stats.budget_tokens_per_layer))
    assert cache.frames_stored == SCALE + 9


@pytest.mark.parametrize("evict_every", [1, 3])
@pytest.mark.parametrize("policy", ["evict3r", "infinitevggt"])
def test_storage_is_allocated_once(policy, evict_every):
    cache = _budgeted(policy_preset(policy), evict_every=evict_every)
    gen = torch.Generator().manual_seed(10)
    run_step(cache, Step("phase1", SCALE), step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM))
    storage = [field.data_ptr() for pool in cache._pools for field in pool.fields()]
    held = cache.stats().bytes_allocated
    for step in random_schedule(11, 80, max_phase1=SCALE):
        if step.kind in ("reset", "phase1"):
            continue
        run_step(cache, step, step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
        assert cache.stats().bytes_allocated == held
    assert [field.data_ptr() for pool in cache._pools for field in pool.fields()] == storage


@pytest.mark.parametrize("evict_every", [1, 2])
@pytest.mark.parametrize("policy", ["evict3r", "infinitevggt"])
def test_a_budgeted_step_never_reads_the_device(policy, evict_every, monkeypatch):
    """On the meta device any read of a value (``item``, ``tolist``, ``bool``, a data-dependent
    shape) raises, so running steps there proves the host never waits for the device; the only
    read is the asynchronous statistics snapshot, pushed out of reach here."""
    monkeypatch.setattr(budgeted_cache, "REALLOCATE_EVERY", 10**9)
    cache = _budgeted(policy_preset(policy), device="meta", evict_every=evict_every)
    gen = torch.Generator().manual_seed(12)
    kinds = ["store"] * 6 + ["skip", "commit", "rollback", "store", "store"]
    for step in [Step("phase1", SCALE)] + [Step(kind) for kind in kinds]:
        tensors = step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM)
        run_step(cache, step, [tuple(t.to("meta") for t in layer) for layer in tensors])
    assert max(cache.patch_tokens(layer) for layer in range(LAYERS)) <= BUDGET + (evict_every - 1) * PATCHES


@pytest.mark.parametrize("granularity", ["token", "frame"])
def test_an_eviction_every_k_frames_frees_k_frames_and_keeps_what_every_frame_would(granularity):
    """Recency ranks the same whatever the cadence, so after each of its evictions a cache that evicts every
    3 frames holds exactly the tokens of one that evicts at every frame; in between it only appends."""
    policy = CachePolicy(f"recency_{granularity}", granularity=granularity, timing="after")
    every_frame, every_third = (_budgeted(policy, evict_every=k) for k in (1, 3))
    gen = torch.Generator().manual_seed(15)
    phase1 = step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM)
    run_step(every_frame, Step("phase1", SCALE), phase1)
    run_step(every_third, Step("phase1", SCALE), phase1)
    evictions = []
    for index in range(3 * MAX_FRAMES):
        tensors = step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM)
        before = every_third.patch_tokens(0)
        run_step(every_frame, Step("store"), tensors)
        run_step(every_third, Step("store"), tensors)
        if every_third.patch_tokens(0) < before:
            evictions.append(index)
            assert kept_tokens(every_third._pools) == kept_tokens(every_frame._pools)
            assert every_third.stats().tokens_per_layer == every_frame.stats().tokens_per_layer
        else:
            assert every_third.patch_tokens(0) == before + PATCHES
    steady = evictions[1:]
    assert len(steady) >= 5 and all(b - a == 3 for a, b in zip(steady, steady[1:], strict=False))


@pytest.mark.parametrize("policy", ["evict3r", "infinitevggt"])
def test_budget_as_a_fraction_of_the_window(policy):
    window = (SCALE + WINDOW) * PATCHES
    for fraction, expected in ((1.0, window), (0.5, round(0.5 * window))):
        cache = _budgeted(policy_preset(policy), budget_tokens=0, budget=fraction)
        gen = torch.Generator().manual_seed(14)
        run_step(cache, Step("phase1", SCALE), step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM))
        assert sum(cache.stats().budget_tokens_per_layer) == LAYERS * expected
    with pytest.raises(ValueError, match="cannot hold the 2 scale frames"):
        _budgeted(policy_preset(policy), budget_tokens=0, budget=0.3)


def test_budget_below_the_scale_frames_is_rejected():
    cache = _budgeted(policy_preset("evict3r"), budget_tokens=SCALE * PATCHES - 1)
    with pytest.raises(ValueError, match="budget_tokens"):
        run_step(cache, Step("phase1", SCALE),
                 step_tensors(torch.Generator(), LAYERS, SCALE, TOKENS, HEADS, DIM))
    check_budget(0.4, 0, SCALE, WINDOW)
    with pytest.raises(ValueError, match=r"budget=0.39 cannot .* >= 0.400 .* = 2/\(2\+3\)\)"):
        check_budget(0.39, 0, SCALE, WINDOW)
    check_budget(0.01, 100, SCALE, WINDOW)  # an absolute budget is checked when the frame size is known


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


def test_allocators_cap_a_layer_at_the_ceiling_and_share_the_rest():
    ceiling = layer_ceiling(100, 20)
    assert ceiling == 20 + 120
    budgets = layer_budgets("diversity", [10.0, 0.0, 0.0, 0.0], 100, 20, 0.5)
    assert budgets[0] == ceiling and budgets[1] == budgets[2] == budgets[3] == 20 + 200 // 3
    assert 397 <= sum(budgets) <= 400


def test_token_pool_removes_slots_per_head_by_moving_the_tail():
    pool = TokenPool(12, 2, 4, torch.float32, torch.device("cpu"))
    keys = torch.arange(10, dtype=torch.float32).view(10, 1, 1).expand(10, 2, 4).clone()
    keys[:, 1] += 100  # head 1 holds other values
    pool.append(keys, -keys, [(10, 5, PATCH)])
    storage = pool.keys.data_ptr()
    slots = torch.tensor([[1, 0], [4, 5], [8, 9]])  # head 0 frees 1, 4, 8; head 1 frees 0, 5, 9
    pool.remove(slots)
    assert pool.length == 7 and pool.keys.data_ptr() == storage
    head0 = sorted(pool.keys[:7, 0, 0].tolist())
    head1 = sorted(pool.keys[:7, 1, 0].tolist())
    assert head0 == [0, 2, 3, 5, 6, 7, 9]
    assert head1 == [101, 102, 103, 104, 106, 107, 108]
    assert torch.equal(pool.values[:7], -pool.keys[:7])  # every field moved alike
    # only tail tokens moved: the survivors below the new length stayed where they were
    assert pool.keys[0, 0, 0] == 0 and pool.keys[2, 0, 0] == 2 and pool.keys[1, 1, 0] == 101


def test_state_scores_protect_and_expire():
    scores = torch.tensor([[0.5], [0.1], [0.2], [0.3], [0.4]])
    state = torch.tensor([[0], [1], [2], [3], [4]], dtype=torch.uint8)
    ranked = state_scores(scores, state)[:, 0]
    assert ranked[1] == ranked[2] == float("inf")
    assert ranked.argsort().tolist() == [4, 3, 0, 1, 2]


def test_token_selection_frees_the_lowest_per_head_or_shared():
    scores = torch.tensor([[0.0, 5.0], [5.0, 0.0], [1.0, 1.0], [float("inf"), -1.0]])
    frames = torch.zeros(4, 2, dtype=torch.int32)
    per_head = evicted_slots(scores, 2, "token", True, frames)
    assert sorted(per_head[:, 0].tolist()) == [0, 2] and sorted(per_head[:, 1].tolist()) == [1, 3]
    shared = evicted_slots(scores, 2, "token", False, frames)
    assert sorted(shared[:, 0].tolist()) == sorted(shared[:, 1].tolist()) == [0, 2]


def test_frame_selection_frees_whole_frames_by_mean_score():
    # frame 1: slots 1, 2 (mean 3.0); frame 2: slots 3, 4 (mean 2.5); frame 3: slot 5; slot 0 protected
    scores = torch.tensor([float("inf"), 5.0, 1.0, 3.0, 2.0, 9.0]).unsqueeze(1)
    frames = torch.tensor([0, 1, 1, 2, 2, 3], dtype=torch.int32).unsqueeze(1)
    assert sorted(evicted_slots(scores, 2, "frame", False, frames)[:, 0].tolist()) == [3, 4]
    assert sorted(evicted_slots(scores, 4, "frame", False, frames)[:, 0].tolist()) == [1, 2, 3, 4]


def test_temporal_rotation_is_undone_and_spares_the_spatial_bands():
    gen = torch.Generator().manual_seed(8)
    content = torch.randn(4, HEADS, DIM, generator=gen)
    frames = torch.tensor([0, 3, 70, 1500]).unsqueeze(1).expand(4, HEADS)
    rotated = rotate_temporal(content, frames)
    assert torch.allclose(rotate_temporal(rotated, frames, inverse=True), content, atol=1e-5)
    assert torch.equal(rotated[..., 20:], content[..., 20:])
    assert not torch.allclose(rotated[1:, :, :20], content[1:, :, :20], atol=1e-3)


def test_diversity_ignores_time_prefers_the_odd_key_and_scores_per_head():
    gen = torch.Generator().manual_seed(9)
    common = torch.randn(1, HEADS, DIM, generator=gen)
    keys = common.repeat(6, 1, 1)
    keys[4, 0] = -common[0, 0]  # odd in head 0 only
    keys[2, 1] = -common[0, 1]  # odd in head 1 only
    frames = (torch.arange(6) * 50).unsqueeze(1).expand(6, HEADS)
    candidates = torch.ones(6, HEADS, dtype=torch.bool)
    scores, diversity = diversity_scores(rotate_temporal(keys, frames), frames, candidates)
    assert scores[:, 0].argmax() == 4 and scores[:, 1].argmax() == 2
    assert torch.allclose(scores[[0, 1, 2, 3, 5], 0], scores[0, 0].expand(5), atol=1e-5)
    assert diversity > 0
    # non-candidates do not move the mean
    candidates[4, 0] = False
    masked, _ = diversity_scores(rotate_temporal(keys, frames), frames, candidates)
    assert torch.allclose(masked[0, 0], torch.tensor(-1.0), atol=1e-5)


def _reference_mass(queries: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The plain computation: the whole probability matrix, in float64."""
    logits = torch.einsum("qhd,khd->hqk", queries.double(), keys.double()) * queries.shape[-1] ** -0.5
    return (logits.softmax(dim=-1) * weights.double().view(1, -1, 1)).sum(dim=1).mean(dim=0)


@pytest.mark.parametrize("chunk_elements", [1, 2 * 5 * 7, 1 << 24])
def test_attention_mass_in_chunks_equals_the_full_matrix(chunk_elements):
    gen = torch.Generator().manual_seed(15)
    q = 2.0 * torch.randn(5, HEADS, DIM, generator=gen)
    keys = 2.0 * torch.randn(40, HEADS, DIM, generator=gen)
    weights = torch.tensor([1.0, 2.0, 1.0, 16.0, 3.0])
    mass = attention_mass(q, weights, keys, chunk_elements=chunk_elements)
    assert mass.dtype == torch.float32
    torch.testing.assert_close(mass.double(), _reference_mass(q, weights, keys), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(mass.sum(), weights.sum())


def test_bf16_keys_accumulate_in_fp32():
    gen = torch.Generator().manual_seed(16)
    q = torch.randn(TOKENS, HEADS, DIM, generator=gen).bfloat16()
    keys = torch.randn(300, HEADS, DIM, generator=gen).bfloat16()
    queries, weights = stand_in_queries(q, SPECIALS, "exact")
    mass = attention_mass(queries, weights, keys, chunk_elements=HEADS * TOKENS * 64)
    assert mass.dtype == torch.float32
    torch.testing.assert_close(mass.double(), _reference_mass(queries, weights, keys), rtol=1e-4, atol=1e-6)


def test_sampled_queries_are_real_rows_weighted_by_what_they_stand_for():
    gen = torch.Generator().manual_seed(17)
    # 37 patches: 10 groups (with the 6 specials, a whole tile of 16 queries), 7 of 4 patches and 3 of 3
    q = torch.randn(SPECIALS + 37, HEADS, DIM, generator=gen)
    queries, weights = stand_in_queries(q, SPECIALS, "sampled")
    rows, same_weights = stand_in_rows(q.shape[0], SPECIALS, "sampled", q.device)
    assert same_weights is weights
    # the specials, then each group's middle patch
    middles = [4 * group + 2 for group in range(7)] + [28 + 3 * group + 1 for group in range(3)]
    assert rows.tolist() == list(range(SPECIALS)) + [SPECIALS + middle for middle in middles]
    assert weights.tolist() == [1.0] * SPECIALS + [4.0] * 7 + [3.0] * 3
    assert weights.sum() == q.shape[0]
    assert torch.equal(queries, q[rows])
    exact, ones = stand_in_queries(q, SPECIALS, "exact")
    assert exact is q and ones.sum() == q.shape[0]
    assert torch.equal(stand_in_rows(q.shape[0], SPECIALS, "exact", q.device)[0], torch.arange(q.shape[0]))
    # both modes weigh the frame's queries alike: the total mass is the frame's token count
    keys = torch.randn(50, HEADS, DIM, generator=gen)
    for mode in ("sampled", "exact"):
        torch.testing.assert_close(attention_mass(*stand_in_queries(q, SPECIALS, mode), keys).sum(),
                                   torch.tensor(float(q.shape[0])))


def test_sampled_queries_fill_whole_tiles_of_the_fused_kernel_with_about_one_per_16_patches():
    # a 378x504 frame: 972 patches in 58 groups of 16-17, 64 queries with the specials (not 67)
    assert sampled_groups(972, SPECIALS) == 58
    rows, weights = stand_in_rows(972 + SPECIALS, SPECIALS, "sampled", torch.device("cpu"))
    assert rows.shape == (64,) and set(weights[SPECIALS:].tolist()) == {16.0, 17.0}
    for patches in range(1, 4000, 7):
        groups = sampled_groups(patches, SPECIALS)
        assert (SPECIALS + groups) % QUERY_TILE == 0 or groups == patches
        # the multiple of the tile nearest to one query per 16 patches (and the specials), at least one tile
        nearest = abs(SPECIALS + groups - (SPECIALS + math.ceil(patches / POOL_GROUP))) <= QUERY_TILE // 2
        assert nearest or SPECIALS + groups == QUERY_TILE or groups == patches
        rows, weights = stand_in_rows(patches + SPECIALS, SPECIALS, "sampled", torch.device("cpu"))
        assert weights.sum() == patches + SPECIALS and rows.unique().numel() == rows.numel()
        assert weights[SPECIALS:].max() - weights[SPECIALS:].min() <= 1  # as equal as can be


@pytest.mark.parametrize("mode", ["sampled", "exact"])
def test_attention_mass_from_a_given_log_sum_exp_equals_the_mass_that_computes_its_own(mode):
    gen = torch.Generator().manual_seed(19)
    q = torch.randn(SPECIALS + 37, HEADS, DIM, generator=gen)
    keys = torch.randn(60, HEADS, DIM, generator=gen)
    queries, weights = stand_in_queries(q, SPECIALS, mode)
    in_use = torch.tensor(45, dtype=torch.int32)
    # the attention's log-sum-exp of every query over the first 45 keys, gathered at the rows
    _, lse = partial_attention(heads_first(q), heads_first(keys[:45]), heads_first(keys[:45]))
    rows = stand_in_rows(q.shape[0], SPECIALS, mode, q.device)[0]
    given = attention_mass(queries, weights, keys, num_keys=in_use, lse=lse[0, :, rows, 0])
    torch.testing.assert_close(given, attention_mass(queries, weights, keys, num_keys=in_use),
                               rtol=1e-5, atol=1e-7)
    assert not given[45:].any()


def test_attention_mass_goes_to_the_matching_key_and_concentration_sees_it():
    queries = torch.zeros(TOKENS, HEADS, DIM)
    queries[..., 0] = 4.0
    keys = torch.zeros(10, HEADS, DIM)
    keys[7, :, 0] = 4.0
    mass = attention_mass(*stand_in_queries(queries, SPECIALS, "sampled"), keys)
    assert int(mass.argmax()) == 7
    assert concentration(torch.ones(10)) == 0
    assert concentration(mass) > concentration(mass.flip(0).sort().values.clamp(min=mass.mean()))


@pytest.mark.parametrize("kwargs", [dict(scorer="attention_mass", timing="before"),
                                    dict(allocator="variance"), dict(scorer="magic"), dict(temperature=0.0),
                                    dict(per_head=True), dict(mass_queries="some")])
def test_inconsistent_compositions_are_rejected(kwargs):
    with pytest.raises(ValueError):
        CachePolicy("bad", **kwargs)


def test_unknown_preset_is_rejected():
    with pytest.raises(ValueError, match="sliding_window"):
        policy_preset("lru")


def test_head_shared_selection_expands_head_zero_to_every_head():
    scores = torch.tensor([[3.0], [1.0], [float("inf")], [2.0]])  # head 0 alone
    frames = torch.zeros(4, HEADS, dtype=torch.int32)
    slots = evicted_slots(scores, 2, "token", False, frames)
    assert slots.shape == (2, HEADS)
    assert all(sorted(slots[:, head].tolist()) == [1, 3] for head in range(HEADS))


def test_the_captured_prefix_follows_the_budget_by_whole_quanta_with_hysteresis():
    assert captured_prefix(None, 350, 100) == 300
    assert captured_prefix(None, 99, 100) == 0  # below a quantum: no captured part
    assert captured_prefix(300, 480, 100) == 300  # within two quanta: the graph is kept
    assert captured_prefix(300, 300, 100) == 300
    assert captured_prefix(300, 500, 100) == 500  # moved up by two quanta
    assert captured_prefix(300, 299, 100) == 200  # the layer may hold fewer tokens than the prefix


def test_stand_in_weights_are_built_once_per_frame_size():
    q = torch.randn(SPECIALS + 37, HEADS, DIM)
    assert stand_in_queries(q, SPECIALS, "sampled")[1] is stand_in_queries(q + 1, SPECIALS, "sampled")[1]
    assert stand_in_queries(q, SPECIALS, "exact")[1].tolist() == [1.0] * q.shape[0]


def test_a_frame_is_appended_as_its_patches_then_its_specials():
    gen = torch.Generator().manual_seed(18)
    k, v = (torch.randn(TOKENS, HEADS, DIM, generator=gen) for _ in range(2))
    by_frame, by_runs = (TokenPool(40, HEADS, DIM, torch.float32, torch.device("cpu")) for _ in range(2))
    by_frame.append_frame(k, v, 5, SPECIALS, SCALE_PATCH)
    by_runs.append(k[SPECIALS:], v[SPECIALS:], [(PATCHES, 5, SCALE_PATCH)])
    by_runs.append(k[:SPECIALS], v[:SPECIALS], [(SPECIALS, 5, SPECIAL)])
    assert by_frame.length == by_runs.length == TOKENS
    for field, expected in zip(by_frame.fields(), by_runs.fields(), strict=True):
        assert torch.equal(field[:TOKENS], expected[:TOKENS])
