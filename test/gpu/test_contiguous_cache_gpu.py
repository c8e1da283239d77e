"""The contiguous sliding window on a GPU: what its eagerly run steps keep of the captured cuDNN attention.

Run on a GPU machine: ``python3 -m pytest -q test/gpu/test_contiguous_cache_gpu.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the shared cache test helpers live in test/
from cache_steps import SPECIALS, Step, run_step  # noqa: E402

from gct_stream_ros.cache.contiguous_cache import ContiguousKVCache  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

LAYERS, HEADS, DIM, PATCHES = 2, 16, 64, 972
SCALE, WINDOW, MAX_FRAMES = 2, 3, 12


def _tensors(gen: torch.Generator, num_frames: int) -> list[tuple[torch.Tensor, ...]]:
    shape = (num_frames, SPECIALS + PATCHES, HEADS, DIM)
    return [tuple(torch.randn(shape, generator=gen, device="cuda", dtype=torch.bfloat16) for _ in range(3))
            for _ in range(LAYERS)]


def test_the_graphs_of_the_patches_alone_go_once_the_specials_fill():
    # eager steps replay one captured cuDNN graph per layer and range, whose buffers (the queries, the
    # output and its log-sum-exp: ~4 MiB a layer here) live as long as the graph is kept
    cache = ContiguousKVCache(LAYERS, HEADS, DIM, SPECIALS, SCALE, WINDOW, MAX_FRAMES, device="cuda",
                              dtype=torch.bfloat16)
    gen = torch.Generator(device="cuda").manual_seed(0)
    run_step(cache, Step("phase1", SCALE), _tensors(gen, SCALE))
    allocated, streams_full = {}, {}
    for frame in range(SCALE, MAX_FRAMES + 6):
        run_step(cache, Step("store"), _tensors(gen, 1))
        torch.cuda.synchronize()
        allocated[frame] = torch.cuda.memory_allocated()
        streams_full[frame] = (cache.store.patch_stream_full, cache.store.special_stream_full)
    growing = [frame for frame, full in streams_full.items() if full == (True, False)]
    filled = [frame for frame, full in streams_full.items() if full == (True, True)]
    assert len(growing) >= 3 and len(filled) >= 3
    # one range a layer is captured while the specials grow, another once they have filled: the memory
    # held stays that of one range a layer
    assert allocated[growing[-1]] == allocated[growing[1]]
    more = allocated[filled[-1]] - allocated[growing[-1]]
    assert more < 2**20, f"{more / 2**20:.1f} MiB more once the specials filled"
