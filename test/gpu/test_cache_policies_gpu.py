"""Budgeted caches on CUDA: the attention mass of bf16 keys (from the attention's log-sum-exp, fused with
the fixed-shape step's accumulation and ranking), and steps that never wait for the device.

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
    ascending,
    count_prefix_captures,
    fill_randomly,
    kept_tokens,
    random_schedule,
    run_step,
    step_tensors,
)

from gct_stream_ros.cache.attention import dense_attention  # noqa: E402
from gct_stream_ros.cache.policies import budgeted_cache, fused_diversity, fused_mass, pool_attention  # noqa: E402
from gct_stream_ros.cache.policies.attention_mass import (  # noqa: E402
    attention_mass,
    concentration,
    stand_in_queries,
    stand_in_rows,
)
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache  # noqa: E402
from gct_stream_ros.cache.policies.policy import policy_preset  # noqa: E402
from gct_stream_ros.cache.policies.scorers import diversity_scores, mass_scores  # noqa: E402
from gct_stream_ros.cache.policies.selection import evicted_slots  # noqa: E402
from gct_stream_ros.cache.policies.temporal_rope import rotate_temporal  # noqa: E402
from gct_stream_ros.cache.policies.token_pool import (  # noqa: E402
    FREE,
    PATCH,
    SPECIAL,
    TokenPool,
    evictable_patches,
    state_scores,
)

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
    slack = (cache.evict_every - 1) * PATCHES  # infinitevggt evicts every 2 frames
    assert all(cache.patch_tokens(layer) <= budget + slack for layer, budget in enumerate(budgets))


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
    scores, diversity = diversity_scores(keys.float(), frames, evictable_patches(state))
    reference = state_scores(scores, state).t()
    num_keys = None if in_use is None else torch.tensor(in_use, dtype=torch.int32, device="cuda")
    ranking, fused_statistic = fused_diversity.diversity_ranking(keys.cuda(), frames.cuda(), stored.cuda(),
                                                                 num_keys=num_keys)
    ranking = ranking.cpu()
    assert ranking.is_contiguous() and ranking.shape == (heads, count)
    scored = torch.isfinite(reference) & (reference > torch.finfo(torch.float32).min)
    torch.testing.assert_close(ranking[scored], reference[scored], rtol=1e-4, atol=1e-5)
    assert torch.equal(ranking[~scored], reference[~scored])
    torch.testing.assert_close(fused_statistic.cpu(), diversity, rtol=1e-4, atol=1e-6)


def test_pool_attention_equals_dense_attention_over_the_prefix():
    gen = torch.Generator().manual_seed(3)
    keys, values = (torch.randn(2000, HEADS, DIM, generator=gen).bfloat16().cuda() for _ in range(2))
    attention = pool_attention.PoolAttention()
    quantum = 160
    # flash only (fewer keys than the prefix), captured + rest, the same graph, a recapture, no prefix
    for length, budget in ((300, 500), (700, 500), (900, 560), (1500, 1400), (1500, 100)):
        q = torch.randn(TOKENS, HEADS, DIM, generator=gen).bfloat16().cuda()
        out, lse = attention(0, q, keys, values, length, budget, quantum, with_lse=True)
        reference = dense_attention(q.float().unsqueeze(0), keys[:length].float(), values[:length].float())
        torch.testing.assert_close(out.transpose(1, 2).float(), reference, rtol=2e-2, atol=1e-2)
        logits = torch.einsum("phd,khd->hpk", q.double(), keys[:length].double()) * DIM**-0.5
        torch.testing.assert_close(lse.double(), logits.logsumexp(dim=-1), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("prefix", [0, 1600])
def test_fused_mass_from_the_attention_log_sum_exp_matches_the_float64_reference(prefix):
    """The fixed-shape step's chain: the attention over a device range returns its log-sum-exp, and the
    one-pass kernel turns it into the mass of exactly those keys (0 past them)."""
    gen = torch.Generator().manual_seed(8)
    keys, values = (torch.randn(5000, HEADS, DIM, generator=gen).bfloat16() for _ in range(2))
    q = torch.randn(TOKENS, HEADS, DIM, generator=gen).bfloat16()
    end = 3123
    bounds = torch.tensor([prefix, end], dtype=torch.int32, device="cuda")
    attention = pool_attention.PoolAttention()
    _, lse = attention.attend_range(0, q.cuda(), keys.cuda(), values.cuda(), prefix, bounds)
    rows, weights = stand_in_rows(TOKENS, SPECIALS, "sampled", torch.device("cuda"))
    mass = fused_mass.attention_mass(q.cuda(), weights, lse, keys.cuda(), bounds[1], rows)
    logits = torch.einsum("qhd,khd->hqk", q[rows.cpu()].double(), keys[:end].double()) * DIM**-0.5
    reference = (logits.softmax(dim=-1) * weights.cpu().double().view(1, -1, 1)).sum(dim=1).mean(dim=0)
    torch.testing.assert_close(mass[:end].cpu().double(), reference, rtol=5e-3, atol=1e-6)
    assert not mass[end:].any()


@pytest.mark.parametrize("ranks", [True, False])
def test_fused_accumulation_ranking_and_statistic_on_cuda_match_the_torch_ops(ranks):
    gen = torch.Generator().manual_seed(9)
    q = torch.randn(TOKENS, HEADS, DIM, generator=gen).bfloat16().cuda()
    keys = torch.randn(5000, HEADS, DIM, generator=gen).bfloat16().cuda()
    count = torch.tensor(3333, dtype=torch.int32, device="cuda")
    rows, weights = stand_in_rows(TOKENS, SPECIALS, "sampled", q.device)
    logits = torch.einsum("phd,khd->hpk", q.float(), keys[:3333].float()) * DIM**-0.5
    lse = logits.logsumexp(dim=-1)
    pool_mass = torch.rand(5000, HEADS, generator=gen).cuda()
    exposure = torch.randint(0, 4, (5000, HEADS), generator=gen).float().cuda()
    state = torch.randint(0, 5, (5000, HEADS), dtype=torch.uint8, generator=gen).cuda()
    mass = fused_mass.attention_mass(q, weights, lse, keys, count, rows)
    expected_mass = pool_mass + (mass * count).unsqueeze(1)
    slots = torch.arange(5000, device="cuda").unsqueeze(1)
    expected_exposure = exposure + (slots < count)
    in_use = torch.where(slots < count, state, FREE)
    expected_ranking = state_scores(mass_scores(expected_mass[:, :1], expected_exposure[:, :1]),
                                    in_use[:, :1])
    statistic = torch.zeros(1, device="cuda")
    ranking = fused_mass.accumulate_mass(q, weights, lse, keys, count, rows, pool_mass, exposure, statistic,
                                         state if ranks else None)
    torch.testing.assert_close(pool_mass, expected_mass, rtol=1e-6, atol=1e-6)
    assert torch.equal(exposure, expected_exposure)
    torch.testing.assert_close(statistic[0], concentration(mass, count), rtol=1e-4, atol=1e-6)
    if not ranks:
        assert ranking is None
        return
    scored = torch.isfinite(expected_ranking) & (expected_ranking > torch.finfo(torch.float32).min)
    torch.testing.assert_close(ranking[scored], expected_ranking[scored], rtol=1e-6, atol=1e-6)
    assert torch.equal(ranking[~scored], expected_ranking[~scored])


def test_fused_pool_writes_and_moves_match_the_torch_ops():
    gen = torch.Generator().manual_seed(4)
    pools = [TokenPool(200, HEADS, DIM, torch.bfloat16, torch.device(device)) for device in ("cpu", "cuda")]
    k, v = (torch.randn(2, TOKENS, HEADS, DIM, generator=gen).bfloat16() for _ in range(2))
    mass, exposure = (torch.rand(2 * TOKENS, HEADS, generator=gen) for _ in range(2))
    slots = ascending(torch.stack([torch.randperm(2 * TOKENS, generator=gen)[:50] for _ in range(HEADS)], 1))
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
    assert torch.equal(fused_mass.mass_ranking(mass.cuda(), exposure.cuda(), state.cuda()).cpu(), reference)


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
                            torch.tensor(7 + frame, dtype=torch.int32, device="cuda"), SPECIALS, PATCH,
                            kept=True)
        cuda.length += TOKENS
    slots = ascending(torch.stack([torch.randperm(2 * TOKENS, generator=gen)[:30] for _ in range(HEADS)], 1))
    cpu.remove(slots)
    cuda.remove(slots.cuda(), torch.tensor([2 * TOKENS, 2 * TOKENS - 30], dtype=torch.int32, device="cuda"))
    for expected, fused in zip(cpu.fields(), cuda.fields(), strict=True):
        assert torch.equal(fused[:cpu.length].cpu(), expected[:cpu.length])


@pytest.mark.parametrize("shared", [False, True])
def test_fused_removals_of_a_frame_and_more_match_the_torch_removals(shared):
    """A frame's worth of slots (978), then more than one ``fused_moves.PAIR_BLOCK``, removed from a pool
    larger than its length with the lengths on the device: what the torch removal gives, the marks
    left cleared for the next removal."""
    gen = torch.Generator().manual_seed(8)
    cpu = TokenPool(6000, HEADS, DIM, torch.bfloat16, torch.device("cpu"))
    cuda = TokenPool(6000, HEADS, DIM, torch.bfloat16, torch.device("cuda"))
    fill_randomly(cpu, gen)
    for source, target in zip(cpu.fields(), cuda.fields(), strict=True):
        target.copy_(source)
    cpu.length = cuda.length = 5000
    for count in (978, 1500):
        if shared:
            slots = torch.randperm(cpu.length, generator=gen)[:count].unsqueeze(1).expand(count, HEADS)
        else:
            slots = torch.stack([torch.randperm(cpu.length, generator=gen)[:count] for _ in range(HEADS)], 1)
        slots = ascending(slots)
        lengths = torch.tensor([cpu.length, cpu.length - count], dtype=torch.int32, device="cuda")
        cpu.remove(slots)
        cuda.remove(slots.cuda(), lengths)
        cuda.length = cpu.length
        for expected, fused in zip(cpu.fields(), cuda.fields(), strict=True):
            assert torch.equal(fused[:cpu.length].cpu(), expected[:cpu.length])
        assert not cuda._marks.any()


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


def test_fused_selection_on_a_pool_of_108k_slots_matches_a_stable_argsort_and_replays_in_a_graph():
    """``evicted_slots`` on CUDA (``fused_select.py``) at the pool's size: per head, over ``[H, N].t()``
    (contiguous rows) and over ``[N, H]`` (strided rows), and head-shared, the chosen sets are a stable
    argsort's (ties by the lowest slot); captured in a CUDA graph, a replay chooses from new scores."""
    gen = torch.Generator().manual_seed(8)
    heads, slots, count = 16, 108_000, 978

    def ranking() -> torch.Tensor:  # [H, N]: ~1,400 exact ties per value, subnormals, expired, protected
        rows = torch.randint(0, 50, (heads, slots), generator=gen).float() / 7
        rows[:, 3::1009] = -1e-40  # all chosen, before the ties at 0.0
        rows[:, 4::1013] = 1e-40
        rows[:, ::997] = float("-inf")
        rows[:, 5::991] = torch.finfo(torch.float32).min
        rows[:, 70_000:] = float("inf")
        return rows

    def expected(rows: torch.Tensor) -> list[set[int]]:
        return [set(torch.argsort(row, stable=True)[:count].tolist()) for row in rows]

    def chosen(slots_by_head: torch.Tensor) -> list[set[int]]:
        return [set(column.tolist()) for column in slots_by_head.t().cpu()]

    frames = torch.zeros(slots, heads, dtype=torch.int32, device="cuda")
    by_head = ranking()
    scores = by_head.cuda().t()  # [N, H] view of [H, N], as fused_diversity.diversity_ranking gives it
    assert chosen(evicted_slots(scores, count, "token", True, frames)) == expected(by_head)
    assert chosen(evicted_slots(scores.contiguous(), count, "token", True, frames)) == expected(by_head)
    shared = evicted_slots(scores[:, :1].contiguous(), count, "token", False, frames)
    assert shared.shape == (count, heads) and chosen(shared) == expected(by_head[:1]) * heads
    distinct = torch.rand(heads, slots, generator=gen)
    assert chosen(evicted_slots(distinct.cuda().t(), count, "token", True, frames)) == expected(distinct)

    static = scores.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        evicted_slots(static, count, "token", True, frames)  # compiled before the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = evicted_slots(static, count, "token", True, frames)
    fresh = ranking()
    static.copy_(fresh.t())
    graph.replay()
    assert chosen(captured) == expected(fresh)


@pytest.mark.parametrize("on_device", [False, True], ids=["host-frame", "device-frame"])
def test_fused_expiry_on_cuda_matches_the_torch_expiry(on_device):
    """``TokenPool.expire`` (``fused_moves.expire`` on CUDA) of a frame found in every state, below and past
    the length: what the CPU pool's torch ops give."""
    gen = torch.Generator().manual_seed(9)
    cpu = TokenPool(6000, HEADS, DIM, torch.bfloat16, torch.device("cpu"))
    cuda = TokenPool(6000, HEADS, DIM, torch.bfloat16, torch.device("cuda"))
    fill_randomly(cpu, gen)
    cpu.frames[::3] = 7
    for source, target in zip(cpu.fields(), cuda.fields(), strict=True):
        target.copy_(source)
    cpu.length = cuda.length = 5000
    before = cpu.state.clone()
    cpu.expire(7)
    if on_device:
        cuda.expire(torch.tensor(7, dtype=torch.int32, device="cuda"),
                    torch.tensor(5000, dtype=torch.int32, device="cuda"))
    else:
        cuda.expire(7)
    assert (cpu.state[:5000] != before[:5000]).any() and torch.equal(cpu.state[5000:], before[5000:])
    assert torch.equal(cuda.state.cpu(), cpu.state) and torch.equal(cuda.frames.cpu(), cpu.frames)


def test_kept_candidate_sums_on_cuda_evict_what_sums_from_scratch_evict(monkeypatch):
    """infinitevggt on CUDA (fixed-shape steps, frames recycled): a cache whose pools keep their candidates'
    sums (``candidate_sums.py``) keeps the tokens of one that sums them from scratch at every ranking,
    and its sums equal a fresh sum at the end."""
    def cache() -> BudgetedKVCache:
        return BudgetedKVCache(LAYERS, HEADS, DIM, policy_preset("infinitevggt"), SPECIALS, 2, 0, 5, 12,
                               device="cuda", dtype=torch.bfloat16, budget=0.6)

    kept, scratch = cache(), cache()  # the pools are allocated at the first step
    tracking = TokenPool.track_candidates
    gen = torch.Generator().manual_seed(7)
    schedule = [step for step in random_schedule(3, 60, max_phase1=2) if step.kind != "reset"]
    for step in schedule:
        layers = step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM, torch.bfloat16)
        tensors = [tuple(t.cuda() for t in layer) for layer in layers]
        monkeypatch.setattr(TokenPool, "track_candidates", tracking)
        run_step(kept, step, tensors)
        monkeypatch.setattr(TokenPool, "track_candidates", lambda pool, sums: None)  # sums from scratch
        run_step(scratch, step, tensors)
        assert kept_tokens(kept._pools) == kept_tokens(scratch._pools)
    assert kept.stats().specials_dropped > 0 and kept.stats().frames_evicted > 0
    assert all(pool.candidates is not None for pool in kept._pools)
    assert all(pool.candidates is None for pool in scratch._pools)
    for pool in kept._pools:
        fresh = fused_diversity.candidate_totals(HEADS, pool.keys.device)
        fused_diversity.sum_candidates(pool.keys, pool.frames, pool.state, *fresh, 0, pool.length)
        torch.testing.assert_close(pool.candidates.totals[0], fresh[0], rtol=1e-6, atol=1e-6)
        assert torch.equal(pool.candidates.totals[1], fresh[1])
        assert torch.equal(fresh[1].cpu(), (pool.state[:pool.length] == PATCH).sum(dim=0).double().cpu())
