"""The evictable patches' sums kept across steps (``cache/policies/candidate_sums.py``) equal a fresh sum
after every change of a pool, and a budgeted infinitevggt cache that keeps them evicts what one that sums
from scratch (the torch scorer) evicts. Triton's interpreter runs the kernels on CPU tensors
(``conftest.py``); tiny shapes."""

from __future__ import annotations

import pytest
import torch
from cache_steps import SPECIALS, Step, ascending, kept_tokens, run_step, step_tensors

pytest.importorskip("triton")

from gct_stream_ros.cache.policies import fused_diversity, fused_ranking  # noqa: E402 - after the skip
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache  # noqa: E402
from gct_stream_ros.cache.policies.candidate_sums import CandidateSums  # noqa: E402
from gct_stream_ros.cache.policies.policy import policy_preset  # noqa: E402
from gct_stream_ros.cache.policies.temporal_rope import rotate_temporal  # noqa: E402
from gct_stream_ros.cache.policies.token_pool import (  # noqa: E402
    PATCH,
    SCALE_PATCH,
    TokenPool,
    evictable_patches,
)

HEADS, DIM, PATCHES = 3, 64, 10
TOKENS = PATCHES + SPECIALS


def _fresh(pool: TokenPool) -> tuple[torch.Tensor, torch.Tensor]:
    """The evictable patches' sums and counts of the pool's slots in use, summed from scratch."""
    totals = fused_diversity.candidate_totals(HEADS, pool.keys.device)
    fused_diversity.sum_candidates(pool.keys, pool.frames, pool.state, *totals, 0, pool.length)
    return totals


def _assert_kept_as_fresh(pool: TokenPool) -> None:
    sums, counts = pool.candidates.totals
    fresh_sums, fresh_counts = _fresh(pool)
    patches = evictable_patches(pool.state[:pool.length]).sum(dim=0).double()
    assert torch.equal(counts[:HEADS], patches) and torch.equal(fresh_counts[:HEADS], patches)
    assert not counts[HEADS:].any() and not sums[HEADS:].any()  # the head that pads 3 to 4
    torch.testing.assert_close(sums, fresh_sums, rtol=1e-6, atol=1e-6)


def _frame_tokens(gen: torch.Generator, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame's keys (with its temporal rotation) and values ``[P, H, D]``, specials first."""
    content = torch.randn(1, HEADS, DIM, generator=gen) + 0.5 * torch.randn(TOKENS, HEADS, DIM, generator=gen)
    keys = rotate_temporal(content, torch.full((TOKENS, HEADS), frame, dtype=torch.int32))
    return keys.bfloat16(), torch.randn(TOKENS, HEADS, DIM, generator=gen).bfloat16()


def _device(number: int) -> torch.Tensor:
    """A fixed-shape step's number: a 0-d int tensor ("on the device")."""
    return torch.tensor(number, dtype=torch.int32)


def test_every_change_of_a_pool_keeps_its_sums_equal_to_a_fresh_sum():
    gen = torch.Generator().manual_seed(11)
    pool = TokenPool(120, HEADS, DIM, torch.bfloat16, torch.device("cpu"))
    pool.track_candidates(CandidateSums(HEADS, pool.keys.device))
    scale = [_frame_tokens(gen, frame) for frame in range(2)]
    keys, values = (torch.cat([tokens[i][SPECIALS:] for tokens in scale]) for i in range(2))
    pool.append(keys, values, [(PATCHES, 0, SCALE_PATCH), (PATCHES, 1, SCALE_PATCH)])  # no candidate
    _assert_kept_as_fresh(pool)
    assert not pool.candidates.totals[1].any()
    for frame in range(2, 6):
        pool.append_frame(*_frame_tokens(gen, frame), frame, SPECIALS, PATCH)
        _assert_kept_as_fresh(pool)
    pool.stage_frame(*_frame_tokens(gen, 6), 6, SPECIALS, PATCH)  # attended, not kept
    _assert_kept_as_fresh(pool)
    for frame, kept in ((6, False), (7, True), (8, True)):  # a fixed-shape SKIP, then STORE steps
        pool.write_frame_at(*_frame_tokens(gen, frame), _device(pool.length), _device(frame), SPECIALS, PATCH,
                            kept=kept)
        pool.length += TOKENS if kept else 0
        _assert_kept_as_fresh(pool)
    pool.expire(3)
    _assert_kept_as_fresh(pool)
    pool.expire(_device(5), _device(pool.length))
    _assert_kept_as_fresh(pool)
    # per-head evictions: candidates, expired patches and specials alike
    evictable = torch.arange(2 * PATCHES, pool.length)
    slots = ascending(torch.stack([evictable[torch.randperm(evictable.numel(), generator=gen)[:13]]
                                   for _ in range(HEADS)], dim=1))
    pool.remove(slots)
    _assert_kept_as_fresh(pool)
    slots = ascending(torch.stack([evictable[torch.randperm(pool.length - 2 * PATCHES, generator=gen)[:7]]
                                   for _ in range(HEADS)], dim=1))
    pool.remove(slots, torch.tensor([pool.length, pool.length - 7]))
    pool.length -= 7
    _assert_kept_as_fresh(pool)
    pool.append_frame(*_frame_tokens(gen, 9), 9, SPECIALS, PATCH)
    pool.truncate(pool.length - TOKENS)  # a rollback
    _assert_kept_as_fresh(pool)
    assert pool.candidates.totals[1].sum() > 0
    pool.truncate(0)
    assert not any(total.any() for total in pool.candidates.totals)


def test_only_an_empty_pool_starts_keeping_sums():
    gen = torch.Generator().manual_seed(12)
    pool = TokenPool(40, HEADS, DIM, torch.bfloat16, torch.device("cpu"))
    pool.append_frame(*_frame_tokens(gen, 0), 0, SPECIALS, PATCH)
    with pytest.raises(RuntimeError, match="empty pool"):
        pool.track_candidates(CandidateSums(HEADS, pool.keys.device))


def _infinitevggt(fixed_shape: bool) -> BudgetedKVCache:
    return BudgetedKVCache(1, HEADS, DIM, policy_preset("infinitevggt"), SPECIALS, 2, 0, 3, max_frames=6,
                           budget=0.6, fixed_shape=fixed_shape)


@pytest.mark.parametrize("fixed_shape", [False, True], ids=["host-addressed", "fixed-shape"])
def test_a_cache_that_keeps_the_sums_evicts_what_the_torch_scorer_evicts(fixed_shape, monkeypatch):
    """Every mode of step, frames recycled by ``max_frames``: the same tokens kept as the torch scorer's
    cache (which sums from scratch), the same statistics, and sums equal to a fresh sum at the end."""
    on_cpu = fused_ranking.available
    scratch, kept = _infinitevggt(fixed_shape), _infinitevggt(fixed_shape)
    gen = torch.Generator().manual_seed(13)
    kinds = ["store"] * 6 + ["skip", "commit", "store", "rollback", "skip"] + ["store"] * 3
    for step in [Step("phase1", 2)] + [Step(kind) for kind in kinds]:
        tensors = step_tensors(gen, 1, step.num_frames, TOKENS, HEADS, DIM)
        monkeypatch.setattr(fused_ranking, "available", on_cpu)  # the torch scorer
        run_step(scratch, step, tensors)
        monkeypatch.setattr(fused_ranking, "available", lambda keys: True)  # the fused kernels
        run_step(kept, step, tensors)
        assert kept_tokens(kept._pools) == kept_tokens(scratch._pools)
        torch.testing.assert_close(kept._statistics, scratch._statistics, rtol=1e-5, atol=1e-6)
    assert kept.stats().specials_dropped > 0 and kept.stats().frames_evicted > 0
    assert scratch._pools[0].candidates is None
    for pool in kept._pools:
        _assert_kept_as_fresh(pool)
