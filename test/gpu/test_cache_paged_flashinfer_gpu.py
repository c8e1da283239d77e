"""FlashInfer paged cache on CUDA: agreement with the gather path (FA2, FA3), and a timing print.

Run on a GPU machine with flashinfer-python installed, with ``-s`` to see the measured numbers:
``pytest -q -s test/gpu/test_cache_paged_flashinfer_gpu.py``. The first FA3 call JIT-compiles its
kernels (about a minute).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared step driver lives in test/
from cache_steps import SPECIALS, random_schedule, run_step, step_tensors  # noqa: E402

from gct_stream_ros.cache.base import StepMode  # noqa: E402
from gct_stream_ros.cache.paged_flashinfer import FlashInferCache  # noqa: E402
from gct_stream_ros.cache.paged_gather import PagedGatherCache  # noqa: E402

pytest.importorskip("flashinfer", reason="flashinfer-python is not installed")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

LAYERS, HEADS, DIM, PATCHES = 2, 4, 64, 37  # 37 patches: FA3 pads its pages to 64
TOKENS = SPECIALS + PATCHES
POISON = 1e4


def _poison(cache) -> None:
    """Fill the pools with huge values before the first write, so any slot the kernel reads but
    should not (padding, evicted or stale slots) ruins the output."""
    for pool in cache.store.pools:
        pool.fill_(POISON)


@pytest.mark.parametrize("kernel", ["fa2", "fa3"])
def test_flashinfer_matches_the_gather_path_in_bf16(kernel):
    sizes = dict(num_special_tokens=SPECIALS, scale_frames=2, sliding_window=3, max_frames=9, device="cuda",
                 dtype=torch.bfloat16)
    fast = FlashInferCache(LAYERS, HEADS, DIM, backend=kernel, **sizes)
    reference = PagedGatherCache(LAYERS, HEADS, DIM, **sizes)
    gen = torch.Generator().manual_seed(0)
    worst, requests_seen = 0.0, set()
    for step in random_schedule(1, 150, max_phase1=3):
        tensors = [tuple(t.cuda() for t in layer)
                   for layer in step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM)]
        hook = _poison if step.kind == "phase1" else None
        ours, theirs = (run_step(cache, step, tensors, hook) for cache in (fast, reference))
        requests_seen.add(fast._num_requests)
        for a, b in zip(ours, theirs):
            worst = max(worst, (a.float() - b.float()).abs().max().item())
    print(f"\n[{kernel}] page size {fast.store.page_size}, requests per plan {sorted(requests_seen)}, "
          f"max |flashinfer - gather| = {worst:.3e}")
    assert worst < 2e-2
    if kernel == "fa3":
        assert fast.store.page_size == 64 and 2 in requests_seen


def _mean_ms(action, repeats: int = 20) -> float:
    action()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        action()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


@pytest.mark.parametrize("backend", ["fa2", "fa3", "gather"])
def test_steady_state_step_time(backend):
    """lingbot-map's default geometry (518x378: 999 patches, 8 scale frames, window 64), 8 layers."""
    layers, heads, patches = 8, 16, 999
    sizes = dict(num_special_tokens=SPECIALS, scale_frames=8, sliding_window=64, max_frames=1024,
                 device="cuda", dtype=torch.bfloat16)
    if backend == "gather":
        cache = PagedGatherCache(layers, heads, DIM, **sizes)
    else:
        cache = FlashInferCache(layers, heads, DIM, backend=backend, **sizes)
    tokens = patches + SPECIALS
    qkv = torch.randn(3, 1, tokens, heads, DIM, device="cuda", dtype=torch.bfloat16)
    scale = torch.randn(3, 8, tokens, heads, DIM, device="cuda", dtype=torch.bfloat16)

    def run(mode: StepMode, q, k, v) -> None:
        cache.begin_step(q.shape[0], tokens, mode)
        for layer in range(layers):
            cache.attend(layer, q, k, v)
        cache.end_step()

    run(StepMode.STORE, *scale)
    for _ in range(70):
        run(StepMode.STORE, *qkv)
    torch.cuda.synchronize()
    steps = 20
    start = time.perf_counter()
    for _ in range(steps):
        run(StepMode.STORE, *qkv)
    torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / steps * 1e3
    stats = cache.stats()
    print(f"\n[{backend}] {stats.tokens_max} keys/layer, {stats.pages_in_use} pages, "
          f"{stats.bytes_allocated / 2**30:.2f} GiB pools: {per_step:.2f} ms/step, "
          f"{per_step / layers:.3f} ms/layer (plan included)")
    if backend != "gather":
        cache.begin_step(1, tokens, StepMode.SKIP)
        plan_ms = _mean_ms(lambda: cache._plan(tokens))
        run_ms = _mean_ms(lambda: cache._attend_visible(1, qkv[0]))  # layers > 0 reuse the plan
        write_ms = _mean_ms(lambda: cache.store.write(0, [cache.frames_stored], *qkv[1:]))
        cache.end_step()
        print(f"[{backend}] plan {plan_ms:.3f} ms, run {run_ms:.3f} ms/layer, write {write_ms:.3f} ms/layer")
    assert stats.tokens_max == (8 + 64) * patches + SPECIALS * cache.frames_stored
