"""The step semantics of ``cache/base.py`` on top of a ``PagedKVStore`` (sliding-window policy).

Shared by the gather and the FlashInfer caches, which differ only in how the queries of a
single-frame step attend over the visible pages (``_attend_visible``), and by the contiguous
cache (``contiguous_cache.py``), whose ``ContiguousKVStore`` keeps the same bookkeeping. Phase 1
(a multi-frame step on an empty cache) always runs plain SDPA over the step's own tokens, as the
reference.

Modes map onto the store as lingbot-map's FlashInfer manager does: STORE appends then evicts;
DEFER and SKIP append without eviction; SKIP removes its frame again at ``end_step`` and
``rollback`` removes a deferred one, so neither leaves a trace.
"""

from __future__ import annotations

import abc

import torch

from gct_stream_ros.cache.attention import dense_attention
from gct_stream_ros.cache.base import CacheStats, StepMode
from gct_stream_ros.cache.paged_store import PagedKVStore
from gct_stream_ros.cache.sizes import CacheSizes, SizedCache, check_head_shape
from gct_stream_ros.cache.stepped_cache import SteppedKVCache


class PagedKVCache(SizedCache, SteppedKVCache):
    """Sliding-window cache over paged storage; the store is (re)built for the first step's size."""

    policy_name = "sliding_window"

    def __init__(self, num_layers: int, num_heads: int, head_dim: int, num_special_tokens: int = 6,
                 scale_frames: int = 8, sliding_window: int = 64, max_frames: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__()
        self.sizes = CacheSizes(num_layers, num_special_tokens, scale_frames, sliding_window, max_frames)
        check_head_shape(num_heads, head_dim)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.device = torch.device(device)
        self.dtype = dtype
        self.store: PagedKVStore | None = None
        self.reset()

    def _clear(self) -> None:
        if self.store is not None:
            self.store.reset()

    def _begin(self, frames: list[int], patches_per_frame: int, mode: StepMode) -> None:
        store = self._store_for(patches_per_frame)
        for frame in frames:
            store.append(frame)
            if mode is StepMode.STORE:
                store.evict()

    def _attend(self, layer: int, frames: list[int], mode: StepMode, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        self.store.write(layer, frames, k, v)
        if len(frames) > 1:
            return dense_attention(q, k.flatten(0, 1), v.flatten(0, 1))  # phase 1: natural order
        return self._attend_visible(layer, q)

    def _end(self, frames: list[int], mode: StepMode) -> None:
        self.store.end_writes()
        if mode is StepMode.SKIP:
            self.store.remove(frames[0])

    def _commit(self) -> None:
        self.store.evict()

    def _rollback(self, frame: int) -> None:
        self.store.remove(frame)

    def stats(self) -> CacheStats:
        store = self.store
        if store is None:
            return CacheStats(frames_stored=0, frames_evicted=0, tokens_per_layer=[0] * self.num_layers,
                              policy=self.policy_name)
        return CacheStats(frames_stored=self.frames_stored, frames_evicted=store.frames_evicted,
                          tokens_per_layer=[store.tokens] * self.num_layers,
                          bytes_allocated=store.bytes_allocated,
                          bytes_used=store.tokens * store.bytes_per_token,
                          pages_in_use=store.pages_in_use, protected_tokens=store.protected_tokens,
                          policy=self.policy_name, specials_dropped=store.specials_dropped)

    @abc.abstractmethod
    def _attend_visible(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        """Attention of a single frame's queries ``[1, P, H, D]`` over the visible set of ``layer``."""

    def _page_size(self, patches_per_frame: int) -> int:
        """Page size for a resolution: one frame's patches per page unless a kernel needs otherwise."""
        return patches_per_frame

    def _store_for(self, patches_per_frame: int) -> PagedKVStore:
        """The store for this resolution; rebuilt when the image size changed on an empty cache."""
        store = self.store
        if store is not None and store.patches_per_frame == patches_per_frame:
            return store
        if store is not None and store.tokens > 0:
            raise ValueError(f"patches per frame changed from {store.patches_per_frame} to "
                             f"{patches_per_frame}: reset the cache when the image size changes")
        self.store = None  # release the old pools before allocating the new ones
        self.store = self._new_store(patches_per_frame)
        return self.store

    def _new_store(self, patches_per_frame: int) -> PagedKVStore:
        """The storage for a resolution (a ``ContiguousKVStore`` duck-types the same interface)."""
        return PagedKVStore(self.num_layers, self.num_heads, self.head_dim, patches_per_frame,
                            self.num_special_tokens, self.scale_frames, self.sliding_window, self.max_frames,
                            self._page_size(patches_per_frame), self.device, self.dtype)
