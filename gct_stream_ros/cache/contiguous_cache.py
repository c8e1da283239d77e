"""Sliding-window cache over contiguous storage, attended in place by dense kernels.

Same step semantics as the paged caches (``paged_cache.py``); the storage is a
``ContiguousKVStore``, whose visible keys are one token range: specials, then patches.

* fp32 (``canonical_order``, the default for fp32): the range is read in the canonical key
  order of ``cache/base.py``, so the outputs equal the dense cache's bit for bit.
* otherwise the range is attended in place, and a single-frame step reads every number that
  changes from step to step (the slots its frame is written to, the key ranges) from one
  ``StepValues`` tensor: its device work is the same from one step to the next as long as
  ``graph_key()`` is, so the model can replay it from a CUDA graph (``model/step_graphs.py``).
  While the window fills: one variable-length flash call over the visible range. Once it is
  full, the patches (a constant key count from then on) and the specials (growing by one
  frame's worth per step) are attended separately and merged by their log-sum-exps
  (``attention.py``): on CUDA the patches through cuDNN (inside a step's graph, or replayed from
  one CUDA graph per layer and key range, ``captured_attention.py``, when the step runs
  eagerly), the specials through the flash kernel.
  Once the specials stop growing too (``max_frames`` frames keep them, ``special_stream_full``),
  the whole visible range has a constant key count and goes through cuDNN in one call: the flash
  kernel takes ~16 us per 1,000 keys where cuDNN takes ~9.8 (H200), and the specials of 1,024
  frames are 6,144 keys a layer: the model step past ``max_frames`` 31.25 -> 30.44 ms, against
  29.1 on a short stream (``benchmarks/README.md``, ninth session). The first such step sets up a
  cuDNN plan per layer for the new key count (~45 ms each, once); the graphs of the patches' range
  are dropped then, never to be replayed again.
  Nothing here reads the device: no host synchronisation in a step. Outputs are in the storage's
  dtype (the output projection that follows casts to it anyway).
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.attention import (
    HALF_DTYPES,
    cudnn_partial_attention,
    dense_attention,
    heads_first,
    merge_partials_tokens_first,
    partial_attention,
    range_attention,
)
from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.cache.captured_attention import CapturedPartialAttention
from gct_stream_ros.cache.contiguous_store import ContiguousKVStore
from gct_stream_ros.cache.paged_cache import PagedKVCache
from gct_stream_ros.cache.step_values import StepValues

VISIBLE, SPECIALS, WRITE_STARTS = slice(0, 2), slice(2, 4), slice(4, 6)
"""The step values: [start, stop) of the visible keys, of the specials, and the first storage token
of the step frame's specials and patches."""


class ContiguousKVCache(PagedKVCache):
    """Sliding-window cache with contiguous storage (see the module docstring)."""

    def __init__(self, num_layers: int, num_heads: int, head_dim: int, num_special_tokens: int = 6,
                 scale_frames: int = 8, sliding_window: int = 64, max_frames: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 canonical_order: bool | None = None):
        self.canonical_order = dtype == torch.float32 if canonical_order is None else canonical_order
        self._canonical: torch.Tensor | None = None
        # (layer, queries, first token, end) -> captured cuDNN attention over that range, for the storage
        # and the special stream's state they were captured in (``_captured_attention``)
        self._captured: dict[tuple[int, int, int, int], CapturedPartialAttention] = {}
        self._captured_for: tuple[int, bool] | None = None
        self._graph_pool: tuple[int, int] | None = None
        self._step_values: StepValues | None = None
        self._write_index: torch.Tensor | None = None  # [P] storage token of each token of the step's frame
        self._merge = merge_partials_tokens_first
        super().__init__(num_layers, num_heads, head_dim, num_special_tokens, scale_frames, sliding_window,
                         max_frames, device, dtype)

    def graph_key(self) -> tuple[object, ...] | None:
        store = self.store
        if not (self._in_place(self._steps.current()[0]) and self.device.type == "cuda"
                and self.dtype in HALF_DTYPES):
            return None
        # the storage (reallocated when an unbounded special stream grows) and, once the window
        # is full, the range that cuDNN reads with a fixed shape (``_captured_range``)
        captured = self._captured_range() if store.patch_stream_full else None
        return (("contiguous", store.kv[0].data_ptr()), captured)

    def _new_store(self, patches_per_frame: int) -> ContiguousKVStore:
        self._captured.clear()  # the graphs read the old storage
        store = ContiguousKVStore(self.num_layers, self.num_heads, self.head_dim, patches_per_frame,
                                  self.num_special_tokens, self.scale_frames, self.sliding_window,
                                  self.max_frames, self.device, self.dtype)
        self._step_values = StepValues(6, self.device, torch.int32)
        # token t of a frame goes to (first storage token of its unit) + offset[t]
        specials = self.num_special_tokens
        tokens = torch.arange(specials + patches_per_frame, device=self.device)
        self._is_special = tokens < specials
        self._token_offsets = torch.where(self._is_special, tokens, tokens - specials)
        return store

    def _in_place(self, frames: list[int]) -> bool:
        """A single-frame step attended in place (see the module docstring)."""
        return not self.canonical_order and len(frames) == 1

    def _begin(self, frames: list[int], patches_per_frame: int, mode: StepMode) -> None:
        super()._begin(frames, patches_per_frame, mode)
        if self._in_place(frames):
            start, split, stop = self.store.visible_range()
            self._step_values.set([start, stop, start, split, *self.store.unit_starts(frames[0])])

    def _attend(self, layer: int, frames: list[int], mode: StepMode, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        if not self._in_place(frames):
            return super()._attend(layer, frames, mode, q, k, v)
        values = self._step_values.values
        if layer == 0:
            starts = values[WRITE_STARTS].long()
            self._write_index = self._token_offsets + torch.where(self._is_special, starts[0], starts[1])
        self.store.write_at(layer, self._write_index, k[0], v[0])
        store = self.store
        kv = store.kv[layer]
        query = q[0].to(self.dtype).contiguous()  # [P, H, D]
        # in the storage's dtype: the output projection that follows casts to it anyway
        if not store.patch_stream_full:
            out, _ = range_attention(query, kv[0], kv[1], values[VISIBLE])
            return out.transpose(1, 2).reshape(q.shape)
        first, stop = self._captured_range()
        captured = self._captured_attention(layer, query, first, stop)
        if store.special_stream_full:  # the whole visible range
            return captured[0][0].transpose(0, 1).reshape(q.shape)
        specials = range_attention(query, kv[0], kv[1], values[SPECIALS])
        return self._merge(specials, captured).reshape(q.shape)

    def compile_regions(self, **options: object) -> None:
        """``torch.compile`` the steady state's merge of the two partial attentions (fixed shapes)."""
        self._merge = torch.compile(merge_partials_tokens_first, **options)

    def _attend_visible(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """The canonical-order path (a single-frame step in storage order is ``_attend``'s)."""
        keys, values = self.store.visible(layer)  # [N, H, D] views
        order = self._canonical_index(layer)
        return dense_attention(q, keys.index_select(0, order), values.index_select(0, order))

    def _captured_range(self) -> tuple[int, int]:
        """The tokens ``[first, stop)`` attended with a fixed shape once the window is full: the patches,
        and the specials before them once their stream is full too (see the module docstring)."""
        start, split, stop = self.store.visible_range()
        return (start if self.store.special_stream_full else split), stop

    def _captured_attention(self, layer: int, query: torch.Tensor, first: int,
                            stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The partial attention of ``query`` ``[P, H, D]`` over the tokens ``[first, stop)``: cuDNN on CUDA
        (see the module docstring)."""
        kv = self.store.kv[layer]
        key, value = heads_first(kv[0, first:stop]), heads_first(kv[1, first:stop])
        if not (query.is_cuda and self.dtype in HALF_DTYPES):
            return partial_attention(heads_first(query), key, value)
        if torch.cuda.is_current_stream_capturing():  # part of the step's graph
            return cudnn_partial_attention(heads_first(query), key, value)
        # a grown storage (the graphs read the old one), or specials that have filled (the ranges of the
        # patches alone are never attended again: their graphs hold ~4 MiB a layer, benchmarks/README.md)
        state = (self.store.origin, self.store.special_stream_full)
        if self._captured_for != state:
            self._captured.clear()
            self._captured_for = state
        index = (layer, query.shape[0], first, stop)
        if index not in self._captured:
            if self._graph_pool is None:
                self._graph_pool = torch.cuda.graph_pool_handle()
            self._captured[index] = CapturedPartialAttention(query.shape[0], key, value, self._graph_pool)
        captured = self._captured[index]
        captured.load(query)
        return captured.run()

    def _canonical_index(self, layer: int) -> torch.Tensor:
        """``store.canonical_index()`` on the device, built at layer 0 of each step."""
        if layer == 0 or self._canonical is None:
            self._canonical = self.store.canonical_index().to(self.device)
        return self._canonical
