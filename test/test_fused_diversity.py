"""The fused diversity ranking (``cache/policies/fused_diversity.py``) against the torch scorer, run by
Triton's interpreter on CPU tensors (``conftest.py``); tiny shapes, the interpreter is slow."""

from __future__ import annotations

import pytest
import torch
from cache_steps import SPECIALS, Step, run_step, step_tensors

pytest.importorskip("triton")

from gct_stream_ros.cache.policies import fused_diversity, fused_ranking, token_pool  # noqa: E402 - after the skip
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache  # noqa: E402
from gct_stream_ros.cache.policies.policy import policy_preset  # noqa: E402
from gct_stream_ros.cache.policies.scorers import diversity_scores  # noqa: E402
from gct_stream_ros.cache.policies.selection import evicted_slots  # noqa: E402
from gct_stream_ros.cache.policies.temporal_rope import rotate_temporal  # noqa: E402
from gct_stream_ros.cache.policies.token_pool import PATCH, state_scores  # noqa: E402

HEADS, DIM, SLOTS, IN_USE = 4, 64, 280, 203
SCALE_SLOTS = 40
EVICTED = 40


def _layer(dtype: torch.dtype, heads: int = HEADS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys ``[N, H, D]`` with their frames' temporal rotation (frames over the whole band's periods),
    frames and mixed states ``[N, H]``: scale patches first, then mostly patches and some of every other
    state, per head."""
    gen = torch.Generator().manual_seed(5)
    frames = torch.randint(0, 3000, (SLOTS, heads), generator=gen, dtype=torch.int32)
    content = torch.randn(1, heads, DIM, generator=gen) + 0.7 * torch.randn(SLOTS, heads, DIM, generator=gen)
    keys = rotate_temporal(content, frames).to(dtype)
    protected_or_expired = (token_pool.SCALE_PATCH, token_pool.SPECIAL, token_pool.EXPIRED_PATCH,
                            token_pool.EXPIRED_SPECIAL)
    others = torch.tensor(protected_or_expired, dtype=torch.uint8)
    state = others[torch.randint(0, 4, (SLOTS, heads), generator=gen)]
    state[torch.rand(SLOTS, heads, generator=gen) < 0.7] = PATCH
    state[:SCALE_SLOTS] = token_pool.SCALE_PATCH  # whole tiles without a candidate, as the scale frames'
    return keys, frames, state


def _in_use(state: torch.Tensor, count: int) -> torch.Tensor:
    """``TokenPool.in_use``: the states with ``FREE`` from ``count`` on."""
    pool = token_pool.TokenPool(SLOTS, state.shape[1], DIM, torch.float32, torch.device("cpu"))
    pool.state.copy_(state)
    return pool.in_use(torch.tensor(count))


def _assert_ranks_as(ranking: torch.Tensor, reference: torch.Tensor) -> None:
    """``ranking`` ``[H, N]`` equals ``reference``: scored keys up to fp32 rounding, the rest exactly."""
    scored = torch.isfinite(reference) & (reference > torch.finfo(torch.float32).min)
    torch.testing.assert_close(ranking[scored], reference[scored], rtol=1e-5, atol=1e-6)
    assert torch.equal(ranking[~scored], reference[~scored])


def _evicted(ranking_by_head: torch.Tensor, frames: torch.Tensor) -> list[list[int]]:
    slots = evicted_slots(ranking_by_head.t(), EVICTED, "token", True, frames)  # [E, H]
    return [sorted(slots[:, head].tolist()) for head in range(frames.shape[1])]


@pytest.mark.parametrize(("dtype", "heads"),
                         [(torch.bfloat16, HEADS), (torch.float32, HEADS), (torch.bfloat16, 3)],
                         ids=["bf16", "fp32", "bf16, 3 heads (padded to 4)"])
@pytest.mark.parametrize("on_device", [False, True], ids=["all slots", "count on the device"])
def test_fused_diversity_ranking_equals_the_torch_scorer(dtype, heads, on_device):
    keys, frames, state = _layer(dtype, heads)
    count = IN_USE if on_device else SLOTS
    in_use = _in_use(state, count)
    scores, diversity = diversity_scores(keys, frames, token_pool.evictable_patches(in_use))
    reference = state_scores(scores, in_use).t()

    num_keys = torch.tensor(count, dtype=torch.int32) if on_device else None
    ranking, fused_statistic = fused_diversity.diversity_ranking(keys, frames, state, num_keys=num_keys)

    assert ranking.shape == (heads, SLOTS) and ranking.is_contiguous()
    _assert_ranks_as(ranking, reference)
    assert (ranking[:, count:] == float("inf")).all()  # never evicted
    torch.testing.assert_close(fused_statistic, diversity, rtol=1e-5, atol=1e-6)
    assert _evicted(ranking, frames) == _evicted(reference, frames)
    assert max(max(slots) for slots in _evicted(ranking, frames)) < count


def test_slots_past_the_device_count_are_not_read():
    keys, frames, state = _layer(torch.bfloat16)
    keys[IN_USE:] = float("nan")  # stale storage: would poison the mean if it were read
    in_use = state[:IN_USE]
    scores, diversity = diversity_scores(keys[:IN_USE], frames[:IN_USE], token_pool.evictable_patches(in_use))
    num_keys = torch.tensor(IN_USE, dtype=torch.int32)
    ranking, fused_statistic = fused_diversity.diversity_ranking(keys, frames, state, num_keys=num_keys)
    _assert_ranks_as(ranking[:, :IN_USE], state_scores(scores, in_use).t())
    assert (ranking[:, IN_USE:] == float("inf")).all()
    torch.testing.assert_close(fused_statistic, diversity, rtol=1e-5, atol=1e-6)


def test_the_budgeted_cache_ranks_a_fixed_shape_step_with_the_fused_kernels(monkeypatch):
    """``_evict_fixed``'s ranking: the fused kernels given the length on the device equal the torch
    scorer over ``TokenPool.in_use`` (the fused path otherwise runs on CUDA only)."""
    cache = BudgetedKVCache(1, HEADS, DIM, policy_preset("infinitevggt"), SPECIALS, 2, 0, 3, 9, budget=0.6,
                            dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(6)
    for step in [Step("phase1", 2)] + [Step("store")] * 6:
        tensors = step_tensors(gen, 1, step.num_frames, SPECIALS + 20, HEADS, DIM, torch.bfloat16)
        run_step(cache, step, tensors)
    pool = cache._pools[0]
    length = torch.tensor(pool.length, dtype=torch.int32)
    assert 0 < pool.length < pool.capacity
    reference = cache._ranking(0, slice(None), length)
    reference_statistic = cache._statistics[0].clone()
    monkeypatch.setattr(fused_ranking, "available", lambda keys: True)
    ranking = cache._ranking(0, slice(None), length)
    _assert_ranks_as(ranking.t(), reference.t())
    torch.testing.assert_close(cache._statistics[0], reference_statistic, rtol=1e-5, atol=1e-6)
