"""Token-budgeted KV cache: the memory policies of ``policy.py`` behind ``GlobalKVCache``.

Each layer keeps its own patch tokens in a dense layout (``TokenSet``, canonical order) because
token-granular policies keep different tokens, and with per-layer budgets different counts, in
every layer; the special tokens of every retained frame are kept in every layer, in storage
allocated once (``SpecialTokens``). The patch tokens of all layers add up to the fixed total
budget once it is reached, so the memory held stays flat from then on.

A step reads the device once: the protected scale-frame patches are a known prefix of the
canonical order, kept positions are computed as indices (no boolean masks), and the layers'
statistics stay on the device until the budgets are re-allocated. Only a step that recycles a
frame past ``max_frames`` reads it again per layer (finding that frame's surviving patches).

Budget: ``budget_tokens`` is the mean number of *patch* tokens a layer may keep (0: the patch
memory of the sliding window, ``(scale_frames + sliding_window) * patches_per_frame``); the
allocator splits ``num_layers * budget_tokens`` over the layers. Specials are bounded by the
``max_frames`` rule of the paged store (the oldest non-scale frame leaves whole, its patches
too), so with ``max_frames > 0`` the cache never holds more than ``budget + 6 * max_frames``
tokens per layer on average and memory is constant on endless streams.

Steps follow ``cache/base.py``: eviction runs at the policy's timing on STORE steps (``before``:
at each layer after the frame is appended, using budgets fixed at ``begin_step`` from the last
statistics; ``after``: at ``end_step`` with this step's statistics); DEFER postpones it, and the
step's attention mass, to ``commit``; SKIP frames are attended but neither stored nor scored.
Budgets are only re-allocated right before an eviction pass, so every layer is within its
current budget after every step.
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.attention import dense_attention
from gct_stream_ros.cache.base import CacheStats, StepMode
from gct_stream_ros.cache.policies.allocators import layer_budgets
from gct_stream_ros.cache.policies.policy import CachePolicy
from gct_stream_ros.cache.policies.scorers import (
    attention_mass,
    diversity_scores,
    mass_scores,
    recency_scores,
    sampled_queries,
)
from gct_stream_ros.cache.policies.selection import kept_positions
from gct_stream_ros.cache.policies.special_tokens import SpecialTokens
from gct_stream_ros.cache.policies.token_set import TokenSet
from gct_stream_ros.cache.sizes import CacheSizes, SizedCache, check_head_shape
from gct_stream_ros.cache.stepped_cache import SteppedKVCache


class BudgetedKVCache(SizedCache, SteppedKVCache):
    """Per-layer token budgets with a pluggable policy (see the module docstring)."""

    def __init__(self, num_layers: int, num_heads: int, head_dim: int, policy: CachePolicy,
                 num_special_tokens: int = 6, scale_frames: int = 8, budget_tokens: int = 0,
                 sliding_window: int = 64, max_frames: int = 0, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.sizes = CacheSizes(num_layers, num_special_tokens, scale_frames, sliding_window, max_frames)
        check_head_shape(num_heads, head_dim)
        if budget_tokens < 0:
            raise ValueError(f"budget_tokens must be >= 0 (0: the default), not {budget_tokens}")
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.policy = policy
        self.budget_tokens = budget_tokens
        self.device = torch.device(device)
        self.dtype = dtype
        # allocated once: a reset (new sequence or window) reuses the storage
        self._specials = [
            SpecialTokens(num_heads, head_dim, num_special_tokens, max_frames, dtype, self.device)
            for _ in range(num_layers)]
        self.reset()

    def _clear(self) -> None:
        empty = TokenSet.empty(self.num_heads, self.head_dim, self.dtype, self.device)
        self._patches = [empty] * self.num_layers
        for specials in self._specials:
            specials.clear()
        self._special_frames: list[int] = []  # frames holding specials, oldest first
        self._patches_per_frame: int | None = None
        self._budgets: list[int] = []
        self._statistics = [torch.zeros((), device=self.device)] * self.num_layers
        self._pending_mass: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * self.num_layers
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
        own_patches, own_specials = self._own_tokens(frames, k, v)
        if mode is StepMode.SKIP:
            parts = (self._patches[layer], own_patches, self._specials[layer].tokens, own_specials)
            return dense_attention(q, torch.cat([part.keys for part in parts]),
                                   torch.cat([part.values for part in parts]))
        self._patches[layer] += own_patches
        self._specials[layer].append(frames, own_specials)
        self._forget(layer, self._dropping)
        if mode is StepMode.STORE and self.policy.timing == "before":
            self._evict(layer)
        if len(frames) > 1:
            return dense_attention(q, k.flatten(0, 1), v.flatten(0, 1))  # phase 1: natural order
        patches, specials = self._patches[layer], self._specials[layer].tokens
        keys, values = torch.cat([patches.keys, specials.keys]), torch.cat([patches.values, specials.values])
        if self.policy.scorer == "attention_mass":
            self._pending_mass[layer] = attention_mass(sampled_queries(q[0], self.num_special_tokens), keys)
            if mode is StepMode.STORE:
                self._apply_mass(layer)
        return dense_attention(q, keys, values)

    def _end(self, frames: list[int], mode: StepMode) -> None:
        self._dropping = []
        if mode is StepMode.STORE and self.policy.timing == "after":
            self._allocate()
            for layer in range(self.num_layers):
                self._evict(layer)

    def _commit(self) -> None:
        for layer in range(self.num_layers):
            self._apply_mass(layer)
        dropping = self._over_max_frames()
        self._allocate()  # with the statistics of the deferred step
        for layer in range(self.num_layers):
            self._forget(layer, dropping)
            self._evict(layer)

    def _rollback(self, frame: int) -> None:
        self._pending_mass = [None] * self.num_layers
        self._special_frames.remove(frame)
        for layer in range(self.num_layers):
            self._forget(layer, [frame])

    def stats(self) -> CacheStats:
        with_patches = torch.unique(torch.cat([p.frames for p in self._patches]))
        patch_bytes = sum(patches.nbytes for patches in self._patches)
        special_bytes = [(specials.nbytes, specials.tokens.nbytes) for specials in self._specials]
        protected = self._protected_patches() + len(self._specials[0])
        return CacheStats(frames_stored=self.frames_stored,
                          frames_evicted=self.frames_stored - with_patches.numel(),
                          tokens_per_layer=[len(p) + len(s) for p, s in zip(self._patches, self._specials)],
                          bytes_allocated=patch_bytes + sum(allocated for allocated, _ in special_bytes),
                          bytes_used=patch_bytes + sum(used for _, used in special_bytes),
                          protected_tokens=protected,
                          policy=self.policy.name, specials_dropped=self._specials_dropped,
                          budget_tokens_per_layer=list(self._budgets))

    # -- internals ---------------------------------------------------------------------------

    def _set_patches_per_frame(self, patches_per_frame: int) -> None:
        """Resolve the budgets for a resolution (only on an empty cache when it changes)."""
        if self._patches_per_frame == patches_per_frame:
            return
        if self._special_frames:
            raise ValueError(f"patches per frame changed from {self._patches_per_frame} to "
                             f"{patches_per_frame}: reset the cache when the image size changes")
        floor = self.scale_frames * patches_per_frame
        mean = self.budget_tokens or (self.scale_frames + self.sliding_window) * patches_per_frame
        if mean < floor:
            raise ValueError(f"budget_tokens={mean} cannot hold the {self.scale_frames} scale frames' "
                             f"{floor} patch tokens")
        self._patches_per_frame = patches_per_frame
        self._mean_budget, self._floor = mean, floor
        self._budgets = [mean] * self.num_layers

    def _own_tokens(self, frames: list[int], k: torch.Tensor, v: torch.Tensor) -> tuple[TokenSet, TokenSet]:
        """The step's patch and special tokens, frame by frame."""
        frame_ids = torch.tensor(frames, dtype=torch.long, device=self.device)

        def tokens(part: slice) -> TokenSet:
            keys, values = k[:, part], v[:, part]  # [S, n, H, D]
            return TokenSet.of(keys.flatten(0, 1).to(self.dtype), values.flatten(0, 1).to(self.dtype),
                               frame_ids.repeat_interleave(keys.shape[1]))

        specials = self.num_special_tokens
        return tokens(slice(specials, None)), tokens(slice(0, specials))

    def _over_max_frames(self) -> list[int]:
        """Drop the oldest non-scale frames beyond ``max_frames`` from the bookkeeping; return them."""
        dropping = []
        while self.max_frames and len(self._special_frames) > self.max_frames:
            oldest = next(f for f in self._special_frames if f >= self.scale_frames)
            self._special_frames.remove(oldest)
            dropping.append(oldest)
            self._specials_dropped += 1
        return dropping

    def _allocate(self) -> None:
        statistics = torch.stack(self._statistics).tolist()  # the one device read of a step
        self._budgets = layer_budgets(self.policy.allocator, statistics, self._mean_budget, self._floor,
                                      self.policy.temperature)

    def _protected_patches(self) -> int:
        """Patch tokens of the stored scale frames: never evicted nor recycled, so the oldest, a prefix."""
        return min(self.frames_stored, self.scale_frames) * (self._patches_per_frame or 0)

    def _forget(self, layer: int, frames: list[int]) -> None:
        """Drop every token of ``frames`` from ``layer``."""
        self._patches[layer] = self._patches[layer].without_frames(frames)
        self._specials[layer].remove(frames)

    def _apply_mass(self, layer: int) -> None:
        """Accumulate the attention mass measured at this layer's last stored step."""
        pending = self._pending_mass[layer]
        if pending is None:
            return
        mass, variance = pending
        patches = self._patches[layer]
        self._patches[layer] = patches.scored(mass[:len(patches)])
        self._specials[layer].add_mass(mass[len(patches):])
        self._statistics[layer] = variance
        self._pending_mass[layer] = None

    def _evict(self, layer: int) -> None:
        patches, budget = self._patches[layer], self._budgets[layer]
        if len(patches) <= budget:
            return
        protected = self._protected_patches()
        if self.policy.scorer == "recency":
            scores = recency_scores(patches.frames)
        elif self.policy.scorer == "attention_mass":
            scores = mass_scores(patches.mass, patches.exposure)
        else:
            scores = torch.full((len(patches),), float("inf"), device=self.device)
            scores[protected:], self._statistics[layer] = diversity_scores(patches.keys[protected:],
                                                                           patches.frames[protected:])
        self._patches[layer] = patches.take(kept_positions(scores, protected, patches.frames, budget,
                                                           self.policy.granularity))
