"""Attention of a step's queries over a token pool's prefix on CUDA in half precision, at the window's rate.

Plain SDPA over the prefix picks cuDNN, whose execution plan is set up on the host for every new
key count: a budgeted layer's count changes at every step (a frame's specials are added), so
that was ~3.5 ms of host time per layer (H200 profile, ``benchmarks/README.md``), 10x the
attention itself. Instead the prefix is attended in two parts, merged by their log-sum-exps
(``attention.merge_partials``; unmasked attention does not depend on how its keys are grouped):

* ``[0, F)``: cuDNN replayed from a CUDA graph (``captured_attention.py``, as the contiguous
  sliding window does), ``F`` a fixed number of keys per layer: the patches a full layer holds
  when it attends (its budget, plus its frame when eviction follows the attention), rounded
  down to a multiple of ``quantum`` keys (one frame of patches). ``F`` is kept while that
  count stays within ``[F, F + 2 quantum)``, so a re-allocation recaptures a layer's graph
  only when its budget moved by more than a frame;
* ``[F, length)``: the rest (up to ~2 frames of patches and the specials) through the flash
  kernel, which needs no per-shape set-up.

While a layer holds fewer than ``F`` tokens (the first frames), the whole prefix goes through the
flash kernel. Either form can return the log-sum-exp of every query over all the keys it attended
(``with_lse``: the parts' merged, ``attention.merged_lse``), from which the attention mass of those
keys follows in one pass (``attention_mass.py``). Nothing here reads the device; a (re)capture
waits for the device once.

``attend_range`` is the form of the budgeted cache's fixed-shape steps: ``F`` chosen when the step
begins (``prefix``), the rest's end read from the device by the flash kernel's variable-length
form (``attention.range_attention``), so one CUDA graph of the whole step serves any pool length.
While such a graph is being captured, cuDNN is issued directly (a graph cannot be replayed inside
another's capture); elsewhere (CPU) the same split runs with torch ops. Its merge returns the
tokens-first layout the model reads back, and ``compile_regions`` compiles it (as the contiguous
cache's merge).
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.attention import (
    HALF_DTYPES,
    cudnn_partial_attention,
    heads_first,
    merge_partials,
    merge_partials_tokens_first_with_lse,
    merged_lse,
    partial_attention,
    range_attention,
)
from gct_stream_ros.cache.captured_attention import CapturedPartialAttention

CAPTURE_FRAMES = 1
"""The quantum of the captured prefix, in frames of patches."""


def captured_prefix(current: int | None, steady: int, quantum: int) -> int:
    """The keys a layer holding ``steady`` patches attends through its graph, given its ``current`` prefix."""
    if current is not None and current <= steady < current + 2 * quantum:
        return current
    return steady // quantum * quantum


class PoolAttention:
    """Per-layer captured cuDNN attention over fixed pool prefixes (see the module docstring)."""

    def __init__(self) -> None:
        # layer -> (prefix keys, key storage address, queries, captured attention over the prefix)
        self._captured: dict[int, tuple[int, int, int, CapturedPartialAttention]] = {}
        self._graph_pool: tuple[int, int] | None = None
        self._merge = merge_partials_tokens_first_with_lse

    def compile_regions(self, **options: object) -> None:
        """``torch.compile`` the merge of ``attend_range``'s two parts (fixed shapes in the steady state)."""
        self._merge = torch.compile(merge_partials_tokens_first_with_lse, **options)

    def clear(self) -> None:
        self._captured.clear()

    def __call__(self, layer: int, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, length: int,
                 steady: int, quantum: int,
                 with_lse: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """q ``[P, H, D]`` over ``keys``/``values[:length]`` (``[C, H, D]`` storage) -> (``[1, H, P, D]``, the
        log-sum-exp ``[H, P]`` fp32 over those keys where ``with_lse``, else None); ``steady``: the
        patches the layer holds once full (see the module docstring)."""
        prefix = self.prefix(layer, steady, quantum)
        if prefix == 0 or length <= prefix:
            whole = partial_attention(heads_first(q.to(keys.dtype)), heads_first(keys[:length]),
                                      heads_first(values[:length]))
            return whole[0], whole[1][0, :, :, 0] if with_lse else None
        captured = self._captured_for(layer, q.shape[0], keys, values, prefix)
        query = captured.load(q)
        rest = partial_attention(query, heads_first(keys[prefix:length]), heads_first(values[prefix:length]))
        first = captured.run()
        return merge_partials(first, rest), merged_lse(first, rest) if with_lse else None

    def attend_range(self, layer: int, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, prefix: int,
                     bounds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q ``[P, H, D]`` over ``keys``/``values`` ``[C, H, D]``: the slots ``[0, prefix)`` and
        ``[bounds[0], bounds[1])`` (int32 ``[2]`` on the device; ``bounds[0]`` is ``prefix``) ->
        (``[P, H, D]`` in the storage's dtype, the log-sum-exp ``[H, P]`` fp32 over those slots); see the
        module docstring."""
        query = q.to(keys.dtype).contiguous()
        out, lse = range_attention(query, keys, values, bounds)
        if prefix == 0:
            return out[0].transpose(0, 1), lse[0, :, :, 0]
        key, value = heads_first(keys[:prefix]), heads_first(values[:prefix])
        if not (keys.is_cuda and keys.dtype in HALF_DTYPES):
            first = partial_attention(heads_first(query), key, value)
        elif torch.cuda.is_current_stream_capturing():  # part of the step's graph
            first = cudnn_partial_attention(heads_first(query), key, value)
        else:
            captured = self._captured_for(layer, query.shape[0], keys, values, prefix)
            captured.load(query)
            first = captured.run()
        return self._merge(first, (out, lse))

    def prefix(self, layer: int, steady: int, quantum: int) -> int:
        """The keys ``layer``, holding ``steady`` patches once full, attends through its captured graph."""
        current = self._captured.get(layer)
        return captured_prefix(None if current is None else current[0], steady, quantum)

    def _captured_for(self, layer: int, num_queries: int, keys: torch.Tensor, values: torch.Tensor,
                      prefix: int) -> CapturedPartialAttention:
        index = (prefix, keys.data_ptr(), num_queries)
        current = self._captured.get(layer)
        if current is None or current[:3] != index:
            if self._graph_pool is None:
                self._graph_pool = torch.cuda.graph_pool_handle()
            self._captured.pop(layer, None)  # its graph's buffers go back to the pool first
            captured = CapturedPartialAttention(num_queries, heads_first(keys[:prefix]),
                                                heads_first(values[:prefix]), self._graph_pool)
            self._captured[layer] = (*index, captured)
        return self._captured[layer][3]
