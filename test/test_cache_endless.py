"""Endless streams: with ``max_frames`` the paged cache runs at constant memory forever."""

from __future__ import annotations

import torch
from cache_steps import SPECIALS, Step, run_step, step_tensors

from gct_stream_ros.cache.paged_gather import PagedGatherCache
from gct_stream_ros.cache.policies.allocators import layer_ceiling
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache
from gct_stream_ros.cache.policies.policy import policy_preset

LAYERS, HEADS, DIM, PATCHES = 2, 2, 64, 8
TOKENS = SPECIALS + PATCHES
SCALE, WINDOW, MAX_FRAMES = 2, 3, 8


def _run(max_frames: int, steps: int, kinds=("store",)) -> list:
    cache = PagedGatherCache(LAYERS, HEADS, DIM, SPECIALS, SCALE, WINDOW, max_frames)
    gen = torch.Generator().manual_seed(0)
    run_step(cache, Step("phase1", SCALE), step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM))
    history = []
    for i in range(steps):
        run_step(cache, Step(kinds[i % len(kinds)]), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
        history.append(cache.stats())
    return history


def test_memory_and_tokens_are_constant_after_warm_up():
    history = _run(MAX_FRAMES, 300, kinds=("store", "skip", "commit", "rollback"))
    steady = history[40:]
    assert len({s.bytes_allocated for s in history}) == 1
    assert {s.tokens_max for s in steady} == {(SCALE + WINDOW) * PATCHES + MAX_FRAMES * SPECIALS}
    assert {s.pages_in_use for s in steady} == {steady[0].pages_in_use}
    last = history[-1]
    assert last.frames_stored == SCALE + 150  # the temporal index keeps counting
    assert last.specials_dropped == last.frames_stored - MAX_FRAMES


def test_scale_specials_survive_and_the_newest_are_kept():
    cache = PagedGatherCache(LAYERS, HEADS, DIM, SPECIALS, SCALE, WINDOW, MAX_FRAMES)
    gen = torch.Generator().manual_seed(1)
    run_step(cache, Step("phase1", SCALE), step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM))
    for _ in range(50):
        run_step(cache, Step("store"), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
    kept = cache.store.specials.slots.ordered_frames()
    stored = cache.frames_stored
    assert kept == list(range(SCALE)) + list(range(stored - MAX_FRAMES + SCALE, stored))


def test_unbounded_specials_grow_with_the_stream():
    history = _run(0, 120)
    assert history[-1].tokens_max == (SCALE + WINDOW) * PATCHES + history[-1].frames_stored * SPECIALS
    assert history[-1].bytes_allocated > history[0].bytes_allocated
    assert history[-1].specials_dropped == 0


def test_budgeted_policies_are_bounded_on_endless_streams():
    budget = (SCALE + WINDOW) * PATCHES
    cache = BudgetedKVCache(LAYERS, HEADS, DIM, policy_preset("evict3r"), SPECIALS, SCALE, budget, WINDOW,
                            MAX_FRAMES)
    gen = torch.Generator().manual_seed(2)
    run_step(cache, Step("phase1", SCALE), step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM))
    storage = [pool.keys.data_ptr() for pool in cache._pools]
    held = cache.stats().bytes_allocated
    most = layer_ceiling(budget, SCALE * PATCHES) + SPECIALS * MAX_FRAMES
    for _ in range(200):
        run_step(cache, Step("store"), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
        stats = cache.stats()
        assert stats.bytes_allocated == held  # allocated once, at the first step
        assert stats.tokens_max <= most
    assert cache.stats().specials_dropped == cache.frames_stored - MAX_FRAMES
    assert [pool.keys.data_ptr() for pool in cache._pools] == storage
