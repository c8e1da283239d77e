"""The fused attention mass (``fused_mass.py``) against plain computations, on CPU through Triton's
interpreter (``conftest.py``): the one-pass mass from a given log-sum-exp, and the fixed-shape step's
accumulation, ranking and layer statistic in the same kernel."""

from __future__ import annotations

import pytest
import torch
from cache_steps import Step, run_step, step_tensors

pytest.importorskip("triton")

from gct_stream_ros.cache.policies import fused_mass, fused_ranking  # noqa: E402 - after the skip
from gct_stream_ros.cache.policies.attention_mass import (  # noqa: E402
    attention_mass,
    concentration,
    stand_in_queries,
    stand_in_rows,
)
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache  # noqa: E402
from gct_stream_ros.cache.policies.policy import policy_preset  # noqa: E402
from gct_stream_ros.cache.policies.scorers import mass_scores  # noqa: E402
from gct_stream_ros.cache.policies.token_pool import FREE, state_scores  # noqa: E402

HEADS, DIM, KEYS, SPECIALS, PATCHES = 4, 64, 300, 6, 37
QUERIES = SPECIALS + PATCHES


def _frame(seed: int, dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(QUERIES, HEADS, DIM, generator=gen).to(dtype),
            torch.randn(KEYS, HEADS, DIM, generator=gen).to(dtype))


def _logits(q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``[H, P, K]`` float64."""
    return torch.einsum("qhd,khd->hqk", q.double(), keys.double()) * DIM**-0.5


@pytest.mark.parametrize("count", [None, 123, 256])  # a block cut by the count, one ending at it
@pytest.mark.parametrize("mode", ["sampled", "exact"])
def test_fused_mass_from_a_given_log_sum_exp_matches_the_float64_softmax(mode, count):
    q, keys = _frame(0)
    used = KEYS if count is None else count
    rows, weights = stand_in_rows(QUERIES, SPECIALS, mode, q.device)
    probabilities = _logits(q, keys[:used]).softmax(dim=-1)  # over all the keys in use
    reference = (probabilities[:, rows] * weights.double().view(1, -1, 1)).sum(dim=1).mean(dim=0)
    lse = _logits(q, keys[:used]).logsumexp(dim=-1).float()  # [H, P], every query's
    num_keys = None if count is None else torch.tensor(count, dtype=torch.int32)
    mass = fused_mass.attention_mass(q, weights, lse, keys, num_keys, rows)
    assert mass.shape == (KEYS,) and mass.dtype == torch.float32
    torch.testing.assert_close(mass[:used].double(), reference, rtol=1e-4, atol=1e-6)
    assert not mass[used:].any()
    # the same without the gather: the chosen queries and their log-sum-exp rows
    queries, _ = stand_in_queries(q, SPECIALS, mode)
    gathered = fused_mass.attention_mass(queries, weights, lse[:, rows], keys, num_keys)
    torch.testing.assert_close(gathered, mass, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("ranks", [True, False])
def test_fused_accumulation_ranking_and_statistic_match_the_torch_ops(ranks):
    q, keys = _frame(1)
    gen = torch.Generator().manual_seed(2)
    count = torch.tensor(217, dtype=torch.int32)
    rows, weights = stand_in_rows(QUERIES, SPECIALS, "sampled", q.device)
    lse = _logits(q, keys[:217]).logsumexp(dim=-1).float()
    pool_mass = torch.rand(KEYS, HEADS, generator=gen)
    exposure = torch.randint(0, 4, (KEYS, HEADS), generator=gen).float()
    state = torch.randint(0, 5, (KEYS, HEADS), dtype=torch.uint8, generator=gen)
    # the torch ops of the fixed-shape step (budgeted_cache._score_fixed and _evict_fixed)
    mass = attention_mass(*stand_in_queries(q, SPECIALS, "sampled"), keys, num_keys=count)
    expected_mass = pool_mass + (mass * count).unsqueeze(1)
    slots = torch.arange(KEYS).unsqueeze(1)
    expected_exposure = exposure + (slots < count)
    in_use = torch.where(slots < count, state, FREE)
    expected_ranking = state_scores(mass_scores(expected_mass[:, :1], expected_exposure[:, :1]),
                                    in_use[:, :1])
    statistics = torch.zeros(3)
    ranking = fused_mass.accumulate_mass(q, weights, lse, keys, count, rows, pool_mass, exposure,
                                         statistics[1:2], state if ranks else None)
    torch.testing.assert_close(pool_mass, expected_mass, rtol=1e-5, atol=1e-6)
    assert torch.equal(exposure, expected_exposure)
    torch.testing.assert_close(statistics[1], concentration(mass, count), rtol=1e-4, atol=1e-6)
    assert statistics[0] == statistics[2] == 0
    if not ranks:
        assert ranking is None
        return
    assert ranking.shape == (KEYS, 1)
    scored = torch.isfinite(expected_ranking) & (expected_ranking > torch.finfo(torch.float32).min)
    torch.testing.assert_close(ranking[scored], expected_ranking[scored], rtol=1e-5, atol=1e-6)
    assert torch.equal(ranking[~scored], expected_ranking[~scored])  # protected, expired and FREE slots
    assert torch.isinf(ranking[217:]).all()


def test_budgeted_steps_scoring_through_the_fused_kernels_keep_what_the_torch_steps_keep(monkeypatch):
    """The fixed-shape steps' wiring (``budgeted_cache._score_fixed``): with the fused kernels switched on
    for CPU tensors, the mass comes from the attention's log-sum-exp and one kernel accumulates, ranks
    and measures it; the host-addressed steps compute the log-sum-exp themselves and accumulate with
    torch ops. Both keep the same tokens."""
    monkeypatch.setattr(fused_ranking, "available", lambda keys: True)
    layers, heads, tokens = 1, 2, SPECIALS + 10
    host, fixed = (BudgetedKVCache(layers, heads, DIM, policy_preset("evict3r"), SPECIALS, 2, 0, 3, 6,
                                   budget=0.6, fixed_shape=fixed_shape) for fixed_shape in (False, True))
    gen = torch.Generator().manual_seed(3)
    for step in [Step("phase1", 2)] + [Step("store")] * 4:
        tensors = step_tensors(gen, layers, step.num_frames, tokens, heads, DIM)
        expected = run_step(host, step, tensors)
        for ours, reference in zip(run_step(fixed, step, tensors), expected, strict=True):
            torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
        for ours, reference in zip(fixed._pools, host._pools, strict=True):
            assert ours.length == reference.length
            assert torch.equal(ours.frames[:ours.length].sort(dim=0).values,
                               reference.frames[:ours.length].sort(dim=0).values)
    assert host._pools[0].length < 6 * tokens  # tokens were evicted
