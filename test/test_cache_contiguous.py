"""Contiguous KV cache: the dense cache's outputs (bit for bit in canonical order, to rounding in
place), one visible range, storage allocated once, the partial attentions' merge, the factory."""

from __future__ import annotations

import pytest
import torch
from cache_steps import SPECIALS, Step, random_schedule, run_step, step_tensors

from gct_stream_ros.cache import contiguous_cache, contiguous_store, factory
from gct_stream_ros.cache.attention import (
    dense_attention,
    heads_first,
    merge_partials,
    partial_attention,
    range_attention,
)
from gct_stream_ros.cache.contiguous_cache import ContiguousKVCache
from gct_stream_ros.cache.dense import DenseKVCache
from gct_stream_ros.cache.factory import build_cache
from gct_stream_ros.stream.config import ConfigError, EngineConfig

LAYERS, HEADS, DIM, PATCHES = 3, 2, 64, 8
TOKENS = SPECIALS + PATCHES
SIZES = [(2, 3, 0, 0), (3, 2, 7, 1), (1, 1, 3, 2), (2, 4, 6, 3)]


def _run_against_dense(scale, window, max_frames, seed, canonical_order, compare, steps=80):
    dense = DenseKVCache(LAYERS, SPECIALS, scale, window, max_frames)
    ours = ContiguousKVCache(LAYERS, HEADS, DIM, SPECIALS, scale, window, max_frames,
                             canonical_order=canonical_order)
    gen = torch.Generator().manual_seed(seed)
    for step in random_schedule(seed, steps, max_phase1=scale + 1):
        tensors = step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM)
        for out, reference in zip(run_step(ours, step, tensors), run_step(dense, step, tensors)):
            compare(out, reference, step)
        assert ours.frames_stored == dense.frames_stored
        assert ours.stats().tokens_per_layer == dense.stats().tokens_per_layer
        assert ours.stats().frames_evicted == dense.stats().frames_evicted
        assert ours.stats().specials_dropped == dense.stats().specials_dropped
    return ours


@pytest.mark.parametrize(("scale", "window", "max_frames", "seed"), SIZES)
def test_canonical_order_equals_dense_bit_for_bit(scale, window, max_frames, seed):
    def equal(out, reference, step):
        assert torch.equal(out, reference), step

    _run_against_dense(scale, window, max_frames, seed, canonical_order=True, compare=equal)


@pytest.mark.parametrize(("scale", "window", "max_frames", "seed"), SIZES)
def test_in_place_attention_equals_dense_to_fp32_rounding(scale, window, max_frames, seed):
    # the GPU path: the visible range read in storage order, split + merged once the window is full
    def close(out, reference, step):
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5, msg=str(step))

    _run_against_dense(scale, window, max_frames, seed, canonical_order=False, compare=close)


def test_the_visible_range_holds_exactly_the_canonical_keys():
    scale, window = 2, 3
    ours = ContiguousKVCache(1, HEADS, DIM, SPECIALS, scale, window, max_frames=9)
    dense = DenseKVCache(1, SPECIALS, scale, window, max_frames=9)
    gen = torch.Generator().manual_seed(4)
    schedule = [Step("phase1", scale)] + [Step(kind) for kind in ["store", "commit", "skip", "rollback"] * 6]
    for step in schedule:
        tensors = step_tensors(gen, 1, step.num_frames, TOKENS, HEADS, DIM)
        run_step(ours, step, tensors)
        run_step(dense, step, tensors)
        keys, values = ours.store.visible(0)
        order = ours.store.canonical_index()
        dense_keys, dense_values = dense._visible(0, None)
        assert sorted(order.tolist()) == list(range(keys.shape[0]))  # a permutation of the whole range
        assert torch.equal(keys[order], dense_keys) and torch.equal(values[order], dense_values)


def test_window_full_means_constant_key_counts_and_one_allocation():
    scale, window = 2, 3
    ours = ContiguousKVCache(LAYERS, HEADS, DIM, SPECIALS, scale, window, max_frames=12,
                             canonical_order=False)
    gen = torch.Generator().manual_seed(5)
    run_step(ours, Step("phase1", scale), step_tensors(gen, LAYERS, scale, TOKENS, HEADS, DIM))
    storage = [kv.data_ptr() for kv in ours.store.kv]
    patch_counts = set()
    for _ in range(40):
        run_step(ours, Step("store"), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
        start, split, stop = ours.store.visible_range()
        if ours.store.patch_stream_full:
            patch_counts.add(stop - split)
    assert patch_counts == {(scale + window) * PATCHES}
    assert [kv.data_ptr() for kv in ours.store.kv] == storage
    assert ours.stats().tokens_per_layer == [(scale + window) * PATCHES + 12 * SPECIALS] * LAYERS


def test_once_both_streams_are_full_one_call_attends_the_whole_range(monkeypatch):
    """Past ``max_frames`` the specials join the patches' fixed-shape call: no flash range call, no merge."""
    scale, window, max_frames = 2, 3, 8
    ours = ContiguousKVCache(LAYERS, HEADS, DIM, SPECIALS, scale, window, max_frames, canonical_order=False)
    dense = DenseKVCache(LAYERS, SPECIALS, scale, window, max_frames)
    ranges = []
    monkeypatch.setattr(contiguous_cache, "range_attention",
                        lambda *args: ranges.append(args[3]) or range_attention(*args))
    gen = torch.Generator().manual_seed(9)
    whole = 0
    for step in [Step("phase1", scale)] + [Step("store")] * 14:
        ranges.clear()
        tensors = step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM)
        for out, reference in zip(run_step(ours, step, tensors), run_step(dense, step, tensors)):
            torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
        start, split, stop = ours.store.visible_range()
        if ours.store.special_stream_full:
            assert ours._captured_range() == (start, stop) and not ranges
            whole += 1
        elif ours.store.patch_stream_full:
            assert ours._captured_range() == (split, stop) and len(ranges) == LAYERS
    assert whole >= 5 and len(ours.store.specials) == max_frames


def test_unbounded_specials_grow_and_keep_every_token(monkeypatch):
    monkeypatch.setattr(contiguous_store, "UNBOUNDED_SPECIAL_UNITS", 4)
    ours = _run_against_dense(1, 2, 0, 6, canonical_order=True, steps=60,
                              compare=lambda out, reference, step: torch.testing.assert_close(out, reference))
    assert ours.store.origin > 4 * SPECIALS


def test_merged_partial_attentions_equal_the_whole_attention():
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(1, 5, HEADS, DIM, generator=gen)
    keys, values = torch.randn(2, 40, HEADS, DIM, generator=gen).unbind(0)
    query, key, value = heads_first(q), heads_first(keys), heads_first(values)
    for split in (1, 17, 39):
        first = partial_attention(query, key[:, :, :split], value[:, :, :split])
        second = partial_attention(query, key[:, :, split:], value[:, :, split:])
        merged = merge_partials(first, second).transpose(1, 2).reshape(q.shape)
        torch.testing.assert_close(merged, dense_attention(q, keys, values), rtol=1e-5, atol=1e-6)


def test_half_precision_partial_attentions_off_cuda_merge_with_an_fp32_log_sum_exp():
    gen = torch.Generator().manual_seed(8)
    q = torch.randn(1, 5, HEADS, DIM, generator=gen).bfloat16()
    keys, values = torch.randn(2, 40, HEADS, DIM, generator=gen).bfloat16().unbind(0)
    query, key, value = heads_first(q), heads_first(keys), heads_first(values)
    first = partial_attention(query, key[:, :, :17], value[:, :, :17])
    second = partial_attention(query, key[:, :, 17:], value[:, :, 17:])
    assert first[0].dtype == torch.bfloat16 and first[1].dtype == torch.float32
    merged = merge_partials(first, second).transpose(1, 2).reshape(q.shape)
    whole = dense_attention(q.float(), keys.float(), values.float())
    torch.testing.assert_close(merged.float(), whole, rtol=2e-2, atol=2e-2)


def test_factory_builds_the_contiguous_cache_from_the_engine_settings():
    config = EngineConfig(num_scale_frames=2, cache_sliding_window=3, cache_max_frames=9,
                          cache_backend="contiguous")
    cache = build_cache(config, num_layers=2, num_heads=2, head_dim=64)
    assert isinstance(cache, ContiguousKVCache)
    assert (cache.scale_frames, cache.sliding_window, cache.max_frames) == (2, 3, 9)
    assert cache.canonical_order  # fp32: the bit-exact order


@pytest.mark.parametrize(("capability", "flashinfer", "expected"),
                         [((9, 0), False, "contiguous"), ((8, 0), True, "flashinfer"),
                          ((8, 0), False, "paged_gather")])
def test_auto_picks_contiguous_from_hopper_on(monkeypatch, capability, flashinfer, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(factory, "flashinfer_available", lambda: flashinfer)
    assert factory._auto_backend(torch.device("cuda"), torch.bfloat16) == expected
    assert factory._auto_backend(torch.device("cuda"), torch.float32) == "paged_gather"
    assert factory._auto_backend(torch.device("cpu"), torch.bfloat16) == "paged_gather"


def test_backend_setting_is_checked():
    with pytest.raises(ConfigError, match="cache_backend"):
        EngineConfig(cache_backend="triton").validate()
    with pytest.raises(ConfigError, match="sliding_window"):
        EngineConfig(cache_policy="evict3r", cache_backend="contiguous").validate()


def test_compile_regions_routes_the_steady_merge_through_torch_compile_unchanged():
    traced = []

    def recording_backend(graph_module, example_inputs):
        traced.append(graph_module)
        return graph_module.forward

    plain, compiled = (ContiguousKVCache(LAYERS, HEADS, DIM, SPECIALS, 2, 3, max_frames=9,
                                         canonical_order=False) for _ in range(2))
    torch._dynamo.reset()
    compiled.compile_regions(backend=recording_backend, dynamic=False)
    gen = torch.Generator().manual_seed(8)
    for step in [Step("phase1", 2)] + [Step("store")] * 7:
        tensors = step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM)
        for ours, reference in zip(run_step(compiled, step, tensors), run_step(plain, step, tensors)):
            assert torch.equal(ours, reference), step
    assert compiled.store.patch_stream_full and traced  # the window filled and the merge was compiled
