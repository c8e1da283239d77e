"""Sliding-window cache over contiguous storage, attended in place by dense kernels.

Same step semantics as the paged caches (``paged_cache.py``); the storage is a
``ContiguousKVStore``, whose visible keys are one token range: specials, then patches.

* fp32 (``canonical_order``, the default for fp32): the range is read in the canonical key
  order of ``cache/base.py``, so the outputs equal the dense cache's bit for bit.
* otherwise the range is attended in place. While the window fills: one flash-kernel call.
  Once it is full, the patches (a constant key count from then on) and the specials (growing
  by one frame's worth per step) are attended separately and merged by their log-sum-exps
  (``attention.py``): on CUDA the patches through cuDNN, replayed from one CUDA graph per layer
  and key range (``captured_attention.py``), the specials through the flash kernel.
  Nothing here reads the device: no host synchronisation in a step. Outputs are in the storage's
  dtype (the output projection that follows casts to it anyway).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from gct_stream_ros.cache.attention import (
    HALF_DTYPES,
    dense_attention,
    heads_first,
    merge_partials,
    partial_attention,
)
from gct_stream_ros.cache.captured_attention import CapturedPartialAttention
from gct_stream_ros.cache.contiguous_store import ContiguousKVStore
from gct_stream_ros.cache.paged_cache import PagedKVCache


class ContiguousKVCache(PagedKVCache):
    """Sliding-window cache with contiguous storage (see the module docstring)."""

    def __init__(self, num_layers: int, num_heads: int, head_dim: int, num_special_tokens: int = 6,
                 scale_frames: int = 8, sliding_window: int = 64, max_frames: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 canonical_order: bool | None = None):
        self.canonical_order = dtype == torch.float32 if canonical_order is None else canonical_order
        self._canonical: torch.Tensor | None = None
        # (layer, queries, first patch token, end) -> captured cuDNN attention over that range
        self._captured: dict[tuple[int, int, int, int], CapturedPartialAttention] = {}
        self._captured_origin = -1
        self._graph_pool: tuple[int, int] | None = None
        super().__init__(num_layers, num_heads, head_dim, num_special_tokens, scale_frames, sliding_window,
                         max_frames, device, dtype)

    def _new_store(self, patches_per_frame: int) -> ContiguousKVStore:
        self._captured.clear()  # the graphs read the old storage
        return ContiguousKVStore(self.num_layers, self.num_heads, self.head_dim, patches_per_frame,
                                 self.num_special_tokens, self.scale_frames, self.sliding_window,
                                 self.max_frames, self.device, self.dtype)

    def _attend_visible(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        store = self.store
        keys, values = store.visible(layer)  # [N, H, D] views
        if self.canonical_order:
            order = self._canonical_index(layer)
            return dense_attention(q, keys.index_select(0, order), values.index_select(0, order))
        key, value = heads_first(keys), heads_first(values)  # [1, H, N, D]
        if not store.patch_stream_full:
            out, _ = partial_attention(heads_first(q.to(self.dtype)), key, value)
        else:
            start, split, stop = store.visible_range()
            query, patches = self._patch_attention(layer, q[0], split, stop)
            specials = partial_attention(query, key[:, :, :split - start], value[:, :, :split - start])
            out = merge_partials(specials, patches())
        # in the storage's dtype: the output projection that follows casts to it anyway
        return out.transpose(1, 2).reshape(q.shape)

    def _patch_attention(self, layer: int, q: torch.Tensor, split: int,
                         stop: int) -> tuple[torch.Tensor, Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
        """The queries ``[P, H, D]`` as ``[1, H, P, D]`` in the storage's dtype, and the partial attention
        over the patch tokens ``[split, stop)``: captured cuDNN on CUDA (see the module docstring)."""
        kv = self.store.kv[layer]
        key, value = heads_first(kv[0, split:stop]), heads_first(kv[1, split:stop])
        if not (q.is_cuda and self.dtype in HALF_DTYPES):
            query = heads_first(q.to(self.dtype))
            return query, functools.partial(partial_attention, query, key, value)
        if self._captured_origin != self.store.origin:  # the storage grew: the graphs read the old one
            self._captured.clear()
            self._captured_origin = self.store.origin
        index = (layer, q.shape[0], split, stop)
        if index not in self._captured:
            if self._graph_pool is None:
                self._graph_pool = torch.cuda.graph_pool_handle()
            self._captured[index] = CapturedPartialAttention(q.shape[0], key, value, self._graph_pool)
        captured = self._captured[index]
        return captured.load(q), captured.run

    def _canonical_index(self, layer: int) -> torch.Tensor:
        """``store.canonical_index()`` on the device, built at layer 0 of each step."""
        if layer == 0 or self._canonical is None:
            self._canonical = self.store.canonical_index().to(self.device)
        return self._canonical
