"""Token-budgeted KV cache: the memory policies of ``policy.py`` behind ``GlobalKVCache``.

Each layer keeps its tokens in a ``TokenPool``: storage allocated once, at the first step, for
the layer's largest budget (``allocators.layer_ceiling``) plus one frame plus the special tokens
of ``max_frames + 2`` frames. A step appends its frame in place, evicts by moving tail tokens
into the freed slots and attends over the pool's prefix: no allocation whose size depends on the
step, and the memory held is the pools' from the first frame on.

Budget (``budget.py``): the mean number of *patch* tokens a layer may keep, ``budget`` times the
sliding window's or ``budget_tokens``; one that cannot hold the protected scale frames is rejected
when the cache is built (``budget_tokens`` at the first frame, when the frame size is known). The
allocator splits ``num_layers`` times it over the layers.

No host sync in a step: every count (tokens appended, patches over budget, specials to drop) is
known on the host, selection and moves run on the device. The layer statistics that drive the
allocator are copied to the host asynchronously (``host_snapshot.py``) every
``REALLOCATE_EVERY`` stored steps and used at the next re-allocation, one period later; the
published policies re-allocate every frame from the last frame's statistics. Between two
re-allocations the layers' lengths are the same at every step (budget + the step's frame).

Specials: every retained frame keeps its special tokens in every layer, protected, until the
``max_frames`` rule recycles the oldest non-scale frame: then its tokens (specials and any
surviving patches) are marked expired and are the first to go at the layer's next eviction.

Steps follow ``cache/base.py``: eviction runs at the policy's timing on STORE steps (``before``:
at each layer after the frame is appended; ``after``: at ``end_step`` with this step's attention
mass); DEFER postpones it, and the step's attention mass, to ``commit``; SKIP frames are attended
(staged after the prefix) but neither stored nor scored. Every layer is within its budget after
every step.
"""

from __future__ import annotations

import math

import torch

from gct_stream_ros.cache.attention import HALF_DTYPES, dense_attention
from gct_stream_ros.cache.base import CacheStats, StepMode
from gct_stream_ros.cache.policies import fused_scores
from gct_stream_ros.cache.policies.allocators import layer_budgets, layer_ceiling
from gct_stream_ros.cache.policies.attention_mass import attention_mass, concentration, stand_in_queries
from gct_stream_ros.cache.policies.budget import DEFAULT_BUDGET, check_budget, mean_budget_tokens
from gct_stream_ros.cache.policies.host_snapshot import HostSnapshot
from gct_stream_ros.cache.policies.policy import CachePolicy
from gct_stream_ros.cache.policies.pool_attention import CAPTURE_FRAMES, PoolAttention
from gct_stream_ros.cache.policies.scorers import diversity_scores, mass_scores, recency_scores
from gct_stream_ros.cache.policies.selection import evicted_slots
from gct_stream_ros.cache.policies.token_pool import PATCH, SCALE_PATCH, SPECIAL, TokenPool, state_scores
from gct_stream_ros.cache.sizes import CacheSizes, SizedCache, check_head_shape
from gct_stream_ros.cache.stepped_cache import SteppedKVCache

REALLOCATE_EVERY = 8
"""Stored steps between two re-allocations of the layer budgets (see the module docstring)."""
UNBOUNDED_SPECIAL_FRAMES = 64
"""Frames of specials the storage first holds when ``max_frames`` is 0 (then doubled as needed)."""


class BudgetedKVCache(SizedCache, SteppedKVCache):
    """Per-layer token budgets with a pluggable policy (see the module docstring)."""

    def __init__(self, num_layers: int, num_heads: int, head_dim: int, policy: CachePolicy,
                 num_special_tokens: int = 6, scale_frames: int = 8, budget_tokens: int = 0,
                 sliding_window: int = 64, max_frames: int = 0, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, budget: float = DEFAULT_BUDGET):
        super().__init__()
        self.sizes = CacheSizes(num_layers, num_special_tokens, scale_frames, sliding_window, max_frames)
        check_head_shape(num_heads, head_dim)
        check_budget(budget, budget_tokens, scale_frames, sliding_window)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.policy = policy
        self.budget_tokens = budget_tokens
        self.budget = budget
        self.device = torch.device(device)
        self.dtype = dtype
        self._pools: list[TokenPool] = []  # allocated at the first step, once per frame size
        self._patches_per_frame: int | None = None
        self._statistics = torch.zeros(num_layers, device=self.device)
        self._snapshot = HostSnapshot(num_layers, self.device)
        on_cuda_in_half = self.device.type == "cuda" and dtype in HALF_DTYPES
        self._pool_attention = PoolAttention() if on_cuda_in_half else None
        self.reset()

    def _clear(self) -> None:
        for pool in self._pools:
            pool.truncate(0)
        self._special_frames: list[int] = []  # frames whose specials are kept, oldest first
        self._patches = [0] * self.num_layers  # patch slots per layer, expired ones included
        self._expired = [0] * self.num_layers  # frames whose specials wait for the layer's next eviction
        self._statistics.zero_()
        self._snapshot.clear()
        self._stored_since_allocation = 0
        self._budgets = [self._mean_budget] * self.num_layers if self._patches_per_frame else []
        self._pending_mass: list[torch.Tensor | None] = [None] * self.num_layers
        self._dropping: list[int] = []
        self._specials_dropped = 0

    def _begin(self, frames: list[int], patches_per_frame: int, mode: StepMode) -> None:
        self._set_patches_per_frame(patches_per_frame)
        self._dropping = []
        if mode is not StepMode.SKIP:
            self._special_frames += frames
        if mode is StepMode.STORE:
            self._dropping = self._over_max_frames()
            if self.policy.timing == "before":
                self._allocate()

    def _attend(self, layer: int, frames: list[int], mode: StepMode, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        pool = self._pools[layer]
        specials = self.num_special_tokens
        if mode is StepMode.SKIP:  # one frame: attended, not kept
            pool.stage_frame(k[0], v[0], frames[0], specials, self._patch_state(frames[0]))
            return self._attend_prefix(layer, q, pool.length + k.shape[1])
        if len(frames) == 1:
            pool.append_frame(k[0], v[0], frames[0], specials, self._patch_state(frames[0]))
        else:  # phase 1: the frames' patches, then their specials
            pool.append(k[:, specials:].flatten(0, 1), v[:, specials:].flatten(0, 1),
                        [(k.shape[1] - specials, frame, self._patch_state(frame)) for frame in frames])
            pool.append(k[:, :specials].flatten(0, 1), v[:, :specials].flatten(0, 1),
                        [(specials, frame, SPECIAL) for frame in frames])
        self._patches[layer] += k.shape[0] * (k.shape[1] - specials)
        if mode is StepMode.STORE:
            self._expire(layer, self._dropping)
            if self.policy.timing == "before":
                self._evict(layer)
        if len(frames) > 1:
            return dense_attention(q, k.flatten(0, 1), v.flatten(0, 1))  # phase 1: natural order
        if self.policy.scorer == "attention_mass":
            queries, weights = stand_in_queries(q[0], specials, self.policy.mass_queries)
            self._pending_mass[layer] = attention_mass(queries, weights, pool.keys[:pool.length])
            if mode is StepMode.STORE:
                self._apply_mass(layer)
        return self._attend_prefix(layer, q, pool.length)

    def _patch_state(self, frame: int) -> int:
        return SCALE_PATCH if frame < self.scale_frames else PATCH

    def _attend_prefix(self, layer: int, q: torch.Tensor, length: int) -> torch.Tensor:
        """One frame's queries ``[1, P, H, D]`` over the layer's first ``length`` slots."""
        pool = self._pools[layer]
        if self._pool_attention is None:
            return dense_attention(q, pool.keys[:length], pool.values[:length])
        patches = self._patches_per_frame or 1
        # the patches a full layer holds when it attends: with eviction after the attention, its frame's too
        steady = self._budgets[layer] + (patches if self.policy.timing == "after" else 0)
        quantum = CAPTURE_FRAMES * patches
        out = self._pool_attention(layer, q[0], pool.keys, pool.values, length, steady, quantum)
        return out.transpose(1, 2).reshape(q.shape)  # in the storage's dtype, as the contiguous cache

    def _end(self, frames: list[int], mode: StepMode) -> None:
        self._dropping = []
        if mode is StepMode.STORE and self.policy.timing == "after":
            self._allocate()
            for layer in range(self.num_layers):
                self._evict(layer)

    def _commit(self) -> None:
        dropping = self._over_max_frames()
        for layer in range(self.num_layers):
            self._apply_mass(layer)
            self._expire(layer, dropping)
        self._allocate()  # with the statistics of the deferred step
        for layer in range(self.num_layers):
            self._evict(layer)

    def _rollback(self, frame: int) -> None:
        self._pending_mass = [None] * self.num_layers
        self._special_frames.remove(frame)
        patches = self._patches_per_frame or 0
        for layer, pool in enumerate(self._pools):  # the frame was appended last and nothing moved since
            pool.truncate(pool.length - patches - self.num_special_tokens)
            self._patches[layer] -= patches

    def stats(self) -> CacheStats:
        with_patches = [pool.frames[:pool.length][pool.state[:pool.length] <= SCALE_PATCH]
                        for pool in self._pools]
        kept_frames = torch.unique(torch.cat(with_patches)).numel() if with_patches else 0
        bytes_used = sum(pool.length * pool.token_bytes for pool in self._pools)
        protected = min(self.frames_stored, self.scale_frames) * (self._patches_per_frame or 0)
        return CacheStats(frames_stored=self.frames_stored,
                          frames_evicted=self.frames_stored - kept_frames,
                          tokens_per_layer=[pool.length for pool in self._pools] or [0] * self.num_layers,
                          bytes_allocated=sum(pool.nbytes for pool in self._pools),
                          bytes_used=bytes_used,
                          protected_tokens=protected + self.num_special_tokens * len(self._special_frames),
                          policy=self.policy.name, specials_dropped=self._specials_dropped,
                          budget_tokens_per_layer=list(self._budgets))

    def layer_statistics(self) -> list[float]:
        """The layers' latest allocator statistics (reads the device: for diagnostics and benchmarks)."""
        return self._statistics.tolist()

    def patch_tokens(self, layer: int) -> int:
        """Patch tokens ``layer`` holds (expired ones of recycled frames included)."""
        return self._patches[layer]

    # -- internals ---------------------------------------------------------------------------

    def _set_patches_per_frame(self, patches_per_frame: int) -> None:
        """Resolve the budgets and allocate the pools for a frame size (on an empty cache)."""
        if self._patches_per_frame == patches_per_frame:
            return
        if self._special_frames:
            raise ValueError(f"patches per frame changed from {self._patches_per_frame} to "
                             f"{patches_per_frame}: reset the cache when the image size changes")
        floor = self.scale_frames * patches_per_frame
        mean = mean_budget_tokens(self.budget, self.budget_tokens, self.scale_frames, self.sliding_window,
                                  patches_per_frame)
        self._patches_per_frame, self._mean_budget, self._floor = patches_per_frame, mean, floor
        self._budgets = [mean] * self.num_layers
        bounded = self.max_frames > 0
        special_frames = self.max_frames + 2 if bounded else UNBOUNDED_SPECIAL_FRAMES
        capacity = (layer_ceiling(mean, floor) + patches_per_frame
                    + self.num_special_tokens * special_frames)
        self._pools = []  # the previous size's pools are freed before the new ones are allocated
        if self._pool_attention is not None:
            self._pool_attention.clear()
        self._pools = [TokenPool(capacity, self.num_heads, self.head_dim, self.dtype, self.device,
                                 growable=not bounded) for _ in range(self.num_layers)]

    def _over_max_frames(self) -> list[int]:
        """Drop the oldest non-scale frames beyond ``max_frames`` from the specials; return them."""
        dropping = []
        while self.max_frames and len(self._special_frames) > self.max_frames:
            oldest = next(f for f in self._special_frames if f >= self.scale_frames)
            self._special_frames.remove(oldest)
            dropping.append(oldest)
            self._specials_dropped += 1
        return dropping

    def _expire(self, layer: int, frames: list[int]) -> None:
        for frame in frames:
            self._pools[layer].expire(frame)
        self._expired[layer] += len(frames)

    def _allocate(self) -> None:
        if self.policy.allocator == "uniform":
            return
        self._stored_since_allocation += 1
        if self._stored_since_allocation < REALLOCATE_EVERY:
            return
        self._stored_since_allocation = 0
        if self._snapshot.taken:
            self._budgets = layer_budgets(self.policy.allocator, self._snapshot.read(), self._mean_budget,
                                          self._floor, self.policy.temperature)
        self._snapshot.take(self._statistics)

    def _apply_mass(self, layer: int) -> None:
        """Accumulate the attention mass measured at this layer's last stored step (Evict3R: x keys)."""
        mass = self._pending_mass[layer]
        if mass is None:
            return
        pool, used = self._pools[layer], mass.shape[0]
        pool.mass[:used] += (mass * used).unsqueeze(1)
        pool.exposure[:used] += 1.0
        if self._snapshot_next():
            self._statistics[layer] = concentration(mass)
        self._pending_mass[layer] = None

    def _snapshot_next(self) -> bool:
        """The next ``_allocate`` copies the statistics: only then must they be current."""
        return self.policy.allocator != "uniform" and self._stored_since_allocation + 1 >= REALLOCATE_EVERY

    def _evict(self, layer: int) -> None:
        pool, patches = self._pools[layer], self._patches_per_frame or 1
        excess = max(0, self._patches[layer] - self._budgets[layer])
        if self.policy.granularity == "frame":
            excess = math.ceil(excess / patches) * patches
        if excess == 0 and self._expired[layer] == 0:
            return
        used = slice(0, pool.length)
        keys, frames, state = pool.keys[used], pool.frames[used], pool.state[used]
        # head-shared scorers rank by head 0 alone (every head holds the same tokens and scores)
        if self.policy.scorer == "recency":
            ranking = state_scores(recency_scores(frames[:, :1]), state[:, :1])
        elif self.policy.scorer == "attention_mass" and fused_scores.available(keys):
            ranking = fused_scores.mass_ranking(pool.mass[used], pool.exposure[used], state)
        elif self.policy.scorer == "attention_mass":
            ranking = state_scores(mass_scores(pool.mass[used, :1], pool.exposure[used, :1]), state[:, :1])
        elif fused_scores.available(keys):
            by_head, self._statistics[layer] = fused_scores.diversity_ranking(keys, frames, state)
            ranking = by_head.t()
        else:
            scores, self._statistics[layer] = diversity_scores(keys, frames, state == PATCH)
            ranking = state_scores(scores, state)
        count = excess + self.num_special_tokens * self._expired[layer]
        pool.remove(evicted_slots(ranking, count, self.policy.granularity, self.policy.per_head, frames))
        self._patches[layer] -= excess
        self._expired[layer] = 0
