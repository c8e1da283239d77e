"""Paged KV cache (gather backend): bit-exact with the dense cache, rollback, resizing, errors."""

from __future__ import annotations

import pytest
import torch
from cache_steps import SPECIALS, Step, random_schedule, run_step, step_tensors

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.cache.dense import DenseKVCache
from gct_stream_ros.cache.frame_slots import FrameSlots, SlotMove
from gct_stream_ros.cache.paged_gather import PagedGatherCache
from gct_stream_ros.cache.paged_store import PagedKVStore

LAYERS, HEADS, DIM, PATCHES = 3, 2, 64, 8
TOKENS = SPECIALS + PATCHES


def _pair(scale: int, window: int, max_frames: int):
    dense = DenseKVCache(LAYERS, SPECIALS, scale, window, max_frames)
    paged = PagedGatherCache(LAYERS, HEADS, DIM, SPECIALS, scale, window, max_frames)
    return dense, paged


def _expected_keys(stored: int, scale: int, window: int) -> int:
    """Visible keys after a STORE step (scale frames, the window, every frame's specials; cache/base.py),
    with no max_frames bound."""
    return (min(stored, scale) + min(max(stored - scale, 0), window)) * PATCHES + SPECIALS * stored


@pytest.mark.parametrize(("scale", "window", "max_frames", "seed"),
                         [(2, 3, 0, 0), (3, 2, 7, 1), (1, 1, 3, 2), (2, 4, 4, 3)])
def test_gather_equals_dense_bit_for_bit(scale, window, max_frames, seed):
    dense, paged = _pair(scale, window, max_frames)
    gen = torch.Generator().manual_seed(seed)
    for step in random_schedule(seed, 220, max_phase1=scale + 1):
        tensors = step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM)
        for ours, reference in zip(run_step(paged, step, tensors), run_step(dense, step, tensors)):
            assert torch.equal(ours, reference), step
        assert paged.frames_stored == dense.frames_stored
        assert paged.stats().tokens_per_layer == dense.stats().tokens_per_layer
        assert paged.stats().frames_evicted == dense.stats().frames_evicted


def test_visible_key_count_follows_the_reference_formula():
    scale, window = 2, 3
    paged = PagedGatherCache(LAYERS, HEADS, DIM, SPECIALS, scale, window)
    gen = torch.Generator().manual_seed(0)
    run_step(paged, Step("phase1", scale), step_tensors(gen, LAYERS, scale, TOKENS, HEADS, DIM))
    for _ in range(10):
        run_step(paged, Step("store"), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
        assert paged.stats().tokens_per_layer == [_expected_keys(paged.frames_stored, scale, window)] * LAYERS


def _snapshot(cache: PagedGatherCache) -> tuple:
    store = cache.store
    visible = [store.gather(layer) for layer in range(LAYERS)]
    return cache.frames_stored, cache.stats(), store.visible_token_index().tolist(), visible


def test_rollback_and_skip_leave_no_trace():
    scale, window = 2, 2
    paged = PagedGatherCache(LAYERS, HEADS, DIM, SPECIALS, scale, window, max_frames=5)
    gen = torch.Generator().manual_seed(1)
    run_step(paged, Step("phase1", scale), step_tensors(gen, LAYERS, scale, TOKENS, HEADS, DIM))
    for _ in range(6):
        run_step(paged, Step("store"), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
    for kind in ("rollback", "skip"):
        before = _snapshot(paged)
        run_step(paged, Step(kind), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
        after = _snapshot(paged)
        assert after[:3] == before[:3]
        for (k_after, v_after), (k_before, v_before) in zip(after[3], before[3]):
            assert torch.equal(k_after, k_before) and torch.equal(v_after, v_before)


def test_defer_attends_one_more_window_frame_until_commit():
    scale, window = 1, 2
    paged = PagedGatherCache(LAYERS, HEADS, DIM, SPECIALS, scale, window)
    gen = torch.Generator().manual_seed(2)
    run_step(paged, Step("phase1", 1), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
    for _ in range(3):
        run_step(paged, Step("store"), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
    q, k, v = step_tensors(gen, 1, 1, TOKENS, HEADS, DIM)[0]
    paged.begin_step(1, TOKENS, StepMode.DEFER)
    paged.attend(0, q, k, v)
    assert paged.store.tokens == (scale + window + 1) * PATCHES + 5 * SPECIALS
    paged.end_step()
    paged.commit()
    assert paged.store.tokens == (scale + window) * PATCHES + 5 * SPECIALS


def test_image_size_change_needs_a_reset_and_rebuilds_the_pools():
    paged = PagedGatherCache(LAYERS, HEADS, DIM, SPECIALS, 1, 1)
    gen = torch.Generator().manual_seed(3)
    run_step(paged, Step("phase1", 1), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
    with pytest.raises(ValueError, match="reset"):
        paged.begin_step(1, TOKENS + 4, StepMode.STORE)
    paged.reset()
    run_step(paged, Step("phase1", 1), step_tensors(gen, LAYERS, 1, TOKENS + 4, HEADS, DIM))
    assert paged.store.patches_per_frame == PATCHES + 4


@pytest.mark.parametrize("action", ["commit", "rollback", "attend", "end_step", "phase1_late", "defer_open"])
def test_misuse_is_rejected(action):
    paged = PagedGatherCache(LAYERS, HEADS, DIM, SPECIALS, 1, 1)
    q = torch.zeros(1, TOKENS, HEADS, DIM)
    if action == "commit":
        with pytest.raises(RuntimeError):
            paged.commit()
    elif action == "rollback":
        with pytest.raises(RuntimeError):
            paged.rollback()
    elif action == "attend":
        with pytest.raises(RuntimeError):
            paged.attend(0, q, q, q)
    elif action == "end_step":
        with pytest.raises(RuntimeError):
            paged.end_step()
    elif action == "phase1_late":
        run_step(paged, Step("store"), step_tensors(torch.Generator(), LAYERS, 1, TOKENS, HEADS, DIM))
        with pytest.raises(ValueError, match="phase 1"):
            paged.begin_step(2, TOKENS, StepMode.STORE)
    else:
        run_step(paged, Step("store"), step_tensors(torch.Generator(), LAYERS, 1, TOKENS, HEADS, DIM))
        paged.begin_step(1, TOKENS, StepMode.DEFER)
        paged.end_step()
        with pytest.raises(RuntimeError, match="DEFER"):
            paged.begin_step(1, TOKENS, StepMode.STORE)


def test_frame_slots_stay_dense_and_keep_the_canonical_order():
    slots = FrameSlots(protected_frames=1, max_evictable=2)
    for frame in range(4):
        slots.append(frame)
    assert slots.over_capacity() == [1]
    assert slots.discard(1) == SlotMove(frame=3, source=3, target=1)
    assert sorted(slots.ordered_slots()) == [0, 1, 2] and slots.ordered_frames() == [0, 2, 3]
    assert slots.discard(2) is None  # the last slot leaves no hole
    assert slots.ordered_frames() == [0, 3] and slots.slot(3) == 1
    with pytest.raises(ValueError):
        slots.pop_last(0)
    with pytest.raises(ValueError):
        slots.append(3)


def test_unbounded_special_pool_grows_without_moving_pages():
    store = PagedKVStore(1, HEADS, DIM, PATCHES, SPECIALS, scale_frames=1, sliding_window=1)
    pages_before = store.num_pages
    special_page = store.specials.first_page
    for frame in range(40):
        store.append(frame)
        store.evict()
    assert store.num_pages > pages_before and store.specials.first_page == special_page
    assert store.pools[0].shape[0] == store.num_pages
