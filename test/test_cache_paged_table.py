"""FlashInfer page tables built without FlashInfer: they cover exactly the gather path's visible set."""

from __future__ import annotations

import pytest
import torch
from cache_steps import SPECIALS, random_schedule, run_step, step_mode, step_tensors

from gct_stream_ros.cache.dense import DenseKVCache
from gct_stream_ros.cache.page_table import PagedRequests, build_requests
from gct_stream_ros.cache.paged_flashinfer import FlashInferCache, flashinfer_available, power_of_two_at_least
from gct_stream_ros.cache.paged_gather import PagedGatherCache
from gct_stream_ros.cache.paged_store import Segment

LAYERS, HEADS, DIM, PATCHES = 2, 2, 64, 12
TOKENS = SPECIALS + PATCHES


class PowerOfTwoPagesGather(PagedGatherCache):
    """The FA3 page geometry (padded pages, densely packed patch stream) on the gather path."""

    def _page_size(self, patches_per_frame: int) -> int:
        return power_of_two_at_least(patches_per_frame)


def _tokens_of(requests: PagedRequests, page_size: int) -> list[list[int]]:
    """Flat pool token ids each request covers (every page full but the last)."""
    covered = []
    for r in range(requests.num_requests):
        pages = requests.kv_indices[requests.kv_indptr[r]:requests.kv_indptr[r + 1]].long()
        tokens = (pages.unsqueeze(1) * page_size + torch.arange(page_size)).flatten()
        covered.append(tokens[:len(tokens) - page_size + int(requests.kv_last_page_len[r])].tolist())
    return covered


@pytest.mark.parametrize(("cache_type", "requests_expected"),
                         [(PagedGatherCache, 1), (PowerOfTwoPagesGather, 2)])
def test_page_table_covers_the_visible_set_at_every_step(cache_type, requests_expected):
    cache = cache_type(LAYERS, HEADS, DIM, SPECIALS, scale_frames=2, sliding_window=3, max_frames=7)
    gen = torch.Generator().manual_seed(4)
    counts = set()
    for step in random_schedule(5, 150, max_phase1=3):
        if step.kind in ("reset", "phase1"):
            run_step(cache, step, step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM))
            continue
        cache.begin_step(1, TOKENS, step_mode(step))  # the table is planned inside the step, before attention
        store = cache.store
        page_ids = torch.arange(store.num_pages, dtype=torch.int32)
        requests = build_requests(store.segments(), store.page_size, TOKENS, page_ids)
        covered = _tokens_of(requests, store.page_size)
        assert sorted(sum(covered, [])) == sorted(store.visible_token_index().tolist())
        assert requests.qo_indptr.tolist() == [TOKENS * r for r in range(requests.num_requests + 1)]
        counts.add(requests.num_requests)
        cache.end_step()
        if step.kind == "commit":
            cache.commit()
        elif step.kind == "rollback":
            cache.rollback()
    assert max(counts) == requests_expected


def test_power_of_two_pages_still_equal_the_dense_cache():
    dense = DenseKVCache(LAYERS, SPECIALS, 2, 3, 6)
    padded = PowerOfTwoPagesGather(LAYERS, HEADS, DIM, SPECIALS, 2, 3, 6)
    gen = torch.Generator().manual_seed(6)
    for step in random_schedule(7, 120, max_phase1=3):
        tensors = step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM)
        for ours, reference in zip(run_step(padded, step, tensors), run_step(dense, step, tensors)):
            assert torch.equal(ours, reference)
    assert padded.store.page_size == 16


def test_aligned_segments_share_one_request_and_partial_ones_split():
    page_ids = torch.arange(10, dtype=torch.int32)
    one = build_requests([Segment(0, 8), Segment(4, 5)], 4, 7, page_ids)
    assert one.kv_indices.tolist() == [0, 1, 4, 5] and one.kv_last_page_len.tolist() == [1]
    two = build_requests([Segment(0, 6), Segment(4, 4)], 4, 7, page_ids)
    assert two.kv_indptr.tolist() == [0, 2, 3] and two.kv_last_page_len.tolist() == [2, 4]
    assert two.qo_indptr.tolist() == [0, 7, 14]
    with pytest.raises(ValueError):
        build_requests([Segment(0, 0)], 4, 7, page_ids)


@pytest.mark.skipif(flashinfer_available(), reason="checks the error raised when flashinfer is missing")
def test_flashinfer_cache_explains_a_missing_flashinfer():
    with pytest.raises(ImportError, match="paged_gather"):
        FlashInferCache(LAYERS, HEADS, DIM)


def test_flashinfer_cache_rejects_fp32_and_unknown_kernels():
    with pytest.raises(ValueError, match="bf16"):
        FlashInferCache(LAYERS, HEADS, DIM, dtype=torch.float32)
    with pytest.raises(ValueError, match="fa2"):
        FlashInferCache(LAYERS, HEADS, DIM, backend="fa4")
