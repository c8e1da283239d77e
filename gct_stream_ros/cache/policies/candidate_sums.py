"""InfiniteVGGT's mean key, kept across steps instead of summed over the layer at every step.

The key-diversity ranking (``fused_diversity.py``) scores every candidate key against its head's
mean normalised, un-rotated key over the evictable patches (``token_pool.evictable_patches``: the
candidates and a recycled frame's patches, which go first). Summing that mean from scratch is a
pass over the layer at every step (~70 us of the ~140 us a layer at 71k keys in use on the H200,
``benchmarks/README.md``), although they change by a few known cells per step: the frame written,
the cells evicted, a rolled-back frame.

A ``CandidateSums`` keeps, per head, the sum of the evictable patches' normalised, un-rotated keys
and their count (fp64, ``fused_diversity.candidate_totals``), and its pool (``token_pool.py``) tells
it of every change of them, before the cells change:

* ``kept``: the rows of tokens written and kept (a frame appended, a fixed-shape STORE step's frame);
* ``forgotten``: the rows given up by a rollback (``TokenPool.truncate``);
* ``removed``: the cells freed by an eviction (``[E, H]``), before the tail moves into them;
* ``clear``: an empty pool.

A frame recycled by ``max_frames`` changes nothing: its patches stay evictable until the eviction
removes them (the first to go). Subtracting them when they expired took a pass over every slot's
frame to find them, ~30 us a layer at every step once the stream passed ``max_frames`` (H200,
``benchmarks/README.md``, ninth session).

Each change's keys are summed by the same kernel as the from-scratch pass, in fp32 within a
program, and added to the totals in fp64 (``_combine_sums``). The totals then differ from a fresh
sum only by the fp32 rounding of the sums added and subtracted (a cell is added in one grouping and
subtracted in another): ~1e-7 of a frame's sum per step, a random walk far below the fp32 scores
that rank the keys (``test/test_candidate_sums.py`` checks the sums against a fresh sum after every
kind of change and after runs of every kind of step; ``test/gpu/test_cache_policies_gpu.py`` on
CUDA, where the steps are replayed from graphs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gct_stream_ros.cache.policies import fused_diversity

if TYPE_CHECKING:  # the pool calls its sums: no import at run time
    from gct_stream_ros.cache.policies.token_pool import TokenPool

Number = int | torch.Tensor
"""A slot or count: a host int, or a 0-d int device tensor (a fixed-shape step's)."""


class CandidateSums:
    """One pool's per-head candidate sums and counts (see the module docstring)."""

    def __init__(self, num_heads: int, device: torch.device) -> None:
        self.totals = fused_diversity.candidate_totals(num_heads, device)

    def clear(self) -> None:
        for total in self.totals:
            total.zero_()

    def kept(self, pool: TokenPool, first: Number, rows: int) -> None:
        """The evictable patches among slots ``[first, first + rows)`` are kept."""
        self._add(pool, first, rows, sign=1.0)

    def forgotten(self, pool: TokenPool, first: int, rows: int) -> None:
        """The evictable patches among slots ``[first, first + rows)`` are no longer kept."""
        self._add(pool, first, rows, sign=-1.0)

    def removed(self, pool: TokenPool, cells: torch.Tensor) -> None:
        """The evictable patches among ``cells`` ``[E, H]`` (each head's slots) are freed."""
        self._add(pool, 0, cells.shape[0], sign=-1.0, cells=cells)

    def _add(self, pool: TokenPool, first: Number, rows: Number, sign: float,
             cells: torch.Tensor | None = None) -> None:
        fused_diversity.sum_candidates(pool.keys, pool.frames, pool.state, *self.totals, first, rows,
                                       cells=cells, sign=sign)
