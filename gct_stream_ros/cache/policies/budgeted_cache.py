"""Token-budgeted KV cache: the memory policies of ``policy.py`` behind ``GlobalKVCache``.

Each layer keeps its tokens in a ``TokenPool``: storage allocated once, at the first step, for
the layer's largest budget (``allocators.layer_ceiling``) plus ``evict_every`` frames plus the
special tokens of ``max_frames + 1 + evict_every`` frames. A step appends its frame in place, evicts
by moving tail tokens into the freed slots and attends over the pool's prefix: no allocation whose
size depends on the step, and the memory held is the pools' from the first frame on.

Budget (``budget.py``): the mean number of *patch* tokens a layer may keep, ``budget`` times the
sliding window's or ``budget_tokens``; one that cannot hold the protected scale frames is rejected
when the cache is built (``budget_tokens`` at the first frame, when the frame size is known). The
allocator splits ``num_layers`` times it over the layers.

Eviction cadence (``evict_every``, ``k``; by default the policy's, ``CachePolicy.evict_every``): a layer
evicts once it holds ``k`` frames of patches over its budget or the specials of ``k`` recycled frames,
and then frees all of them; ``k = 1`` is the published policies' eviction at every stored frame. A
larger ``k`` runs the scoring and selection once per ``k`` stored frames (their cost per frame divided
by ``k``) and attends up to ``k - 1`` frames more in between; the tokens kept differ from ``k = 1``'s by
what one eviction of ``k`` frames chooses instead of ``k`` of one (the deviations from the full window
measured for both: ``docs/memory_policies.md``).

No host sync in a step: every count (tokens appended, patches over budget, specials to drop) is
known on the host, selection and moves run on the device. The layer statistics that drive the
allocator are copied to the host asynchronously (``host_snapshot.py``) every
``REALLOCATE_EVERY`` stored steps and used at the next re-allocation, one period later; the
published policies re-allocate every frame from the last frame's statistics. A re-allocation whose
budgets are all within a frame of patches of the current ones keeps them (``BUDGET_MOVE_FRAMES``). Between
two re-allocations a layer's patch count cycles through the same values (its budget + up to
``evict_every`` frames).

Specials: every retained frame keeps its special tokens in every layer, protected, until the
``max_frames`` rule recycles the oldest non-scale frame: then its tokens (specials and any
surviving patches) are marked expired and are the first to go at the layer's next eviction.

Steps follow ``cache/base.py``: eviction runs at the policy's timing on STORE steps (``before``:
at each layer after the frame is appended; ``after``: at each layer after its attention, with
this step's attention mass; the budgets of a re-allocation are set when the step begins, the
statistics are snapshotted when it ends); DEFER postpones it, and the step's attention mass, to
``commit``; SKIP frames are attended (staged after the prefix) but neither stored nor scored.
Every layer is within its budget plus ``evict_every - 1`` frames of patches after every step.

Fixed-shape steps (``fixed_shape``, by default on CUDA in half precision): a single-frame STORE
or SKIP step of a non-scale frame at token granularity is replayed by the model from a CUDA graph;
what it reads from the device and when its ``graph_key()`` changes is in ``fixed_step.py``.
Other steps (phase 1, the scale frames, DEFER and its ``commit``, frame granularity) run the
host-addressed path, whose CPU results are those of the plain torch ops (``fixed_shape=False``).
"""

from __future__ import annotations

import math

import torch

from gct_stream_ros.cache.attention import HALF_DTYPES, dense_attention
from gct_stream_ros.cache.base import CacheStats, StepMode
from gct_stream_ros.cache.policies import fused_diversity, fused_mass, fused_ranking
from gct_stream_ros.cache.policies.allocators import layer_budgets, layer_ceiling
from gct_stream_ros.cache.policies.attention_mass import (
    attention_mass,
    concentration,
    stand_in_queries,
    stand_in_rows,
)
from gct_stream_ros.cache.policies.budget import (
    DEFAULT_BUDGET,
    POLICY_CADENCE,
    check_budget,
    check_evict_every,
    mean_budget_tokens,
)
from gct_stream_ros.cache.policies.candidate_sums import CandidateSums
from gct_stream_ros.cache.policies.fixed_step import (
    APPENDED,
    ATTEND_END,
    FRAME,
    KEPT,
    PREFIX,
    RECYCLED,
    START,
    FixedStep,
    layer_values,
)
from gct_stream_ros.cache.policies.host_snapshot import HostSnapshot
from gct_stream_ros.cache.policies.policy import CachePolicy
from gct_stream_ros.cache.policies.pool_attention import CAPTURE_FRAMES, PoolAttention
from gct_stream_ros.cache.policies.scorers import diversity_scores, mass_scores, recency_scores
from gct_stream_ros.cache.policies.selection import evicted_slots
from gct_stream_ros.cache.policies.token_pool import (
    PATCH,
    SCALE_PATCH,
    SPECIAL,
    TokenPool,
    evictable_patches,
    state_scores,
)
from gct_stream_ros.cache.sizes import CacheSizes, SizedCache, check_head_shape
from gct_stream_ros.cache.step_values import StepValues
from gct_stream_ros.cache.stepped_cache import SteppedKVCache

REALLOCATE_EVERY = 8
"""Stored steps between two re-allocations of the layer budgets (see the module docstring)."""
BUDGET_MOVE_FRAMES = 1
"""A re-allocation takes its budgets only when some layer's moves by at least this many frames of patches:
a step at which a layer frees other than one frame runs without its CUDA graph (``graph_key``), and with
budgets moved at every re-allocation 94 of 1,292 steps did (65-125 ms against 33 on the H200, 2026-11-30:
``benchmarks/README.md``, ninth session)."""
UNBOUNDED_SPECIAL_FRAMES = 64
"""Frames of specials the storage first holds when ``max_frames`` is 0 (then doubled as needed)."""
class BudgetedKVCache(SizedCache, SteppedKVCache):
    """Per-layer token budgets with a pluggable policy (see the module docstring)."""

    def __init__(self, num_layers: int, num_heads: int, head_dim: int, policy: CachePolicy,
                 num_special_tokens: int = 6, scale_frames: int = 8, budget_tokens: int = 0,
                 sliding_window: int = 64, max_frames: int = 0, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, budget: float = DEFAULT_BUDGET,
                 fixed_shape: bool | None = None, evict_every: int = POLICY_CADENCE):
        super().__init__()
        self.sizes = CacheSizes(num_layers, num_special_tokens, scale_frames, sliding_window, max_frames)
        check_head_shape(num_heads, head_dim)
        check_budget(budget, budget_tokens, scale_frames, sliding_window)
        check_evict_every(evict_every)
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.policy = policy
        self.budget_tokens = budget_tokens
        self.budget = budget
        self.evict_every = evict_every or policy.evict_every
        self.device = torch.device(device)
        self.dtype = dtype
        self._on_cuda_in_half = self.device.type == "cuda" and dtype in HALF_DTYPES
        self.fixed_shape = self._on_cuda_in_half if fixed_shape is None else fixed_shape
        """Run single-frame STORE and SKIP steps in fixed shapes (see the module docstring)."""
        self._pools: list[TokenPool] = []  # allocated at the first step, once per frame size
        self._patches_per_frame: int | None = None
        self._statistics = torch.zeros(num_layers, device=self.device)
        self._snapshot = HostSnapshot(num_layers, self.device)
        self._pool_attention = PoolAttention()
        self._step_values: StepValues | None = None
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
        self._snapshot_at_end = False
        self._budgets = [self._mean_budget] * self.num_layers if self._patches_per_frame else []
        self._pending_mass: list[torch.Tensor | None] = [None] * self.num_layers
        self._dropping: list[int] = []
        self._fixed: FixedStep | None = None
        self._specials_dropped = 0

    def _begin(self, frames: list[int], patches_per_frame: int, mode: StepMode) -> None:
        self._set_patches_per_frame(patches_per_frame)
        self._dropping = []
        if mode is not StepMode.SKIP:
            self._special_frames += frames
        if mode is StepMode.STORE:
            self._dropping = self._over_max_frames()
            snapshot = self._count_allocation()
            if snapshot and self.policy.timing == "before":
                self._snapshot.take(self._statistics)
            self._snapshot_at_end = snapshot and self.policy.timing == "after"
        self._fixed = self._fixed_step(frames, mode)

    def compile_regions(self, **options: object) -> None:
        """``torch.compile`` the merge of the fixed-shape steps' two partial attentions
        (``PoolAttention.compile_regions``)."""
        self._pool_attention.compile_regions(**options)

    @property
    def steady_graph_keys(self) -> int:
        """One per step of the eviction's cycle: a step at which some layers evict and others not is a key of
        its own."""
        return self.evict_every

    def graph_key(self) -> tuple[object, ...] | None:
        """A key for a fixed-shape step in the steady state (a SKIP step, or a STORE step at which every
        layer frees ``evict_every`` frames of patches and as many recycled frames' specials, or, with
        ``evict_every`` > 1, none), None otherwise; see the module docstring for when it changes."""
        self._steps.current()  # raises outside a step
        fixed = self._fixed
        if fixed is None:
            return None
        frame = self._patches_per_frame + self.num_special_tokens * fixed.recycling
        cycle = self.evict_every * frame if fixed.stores else 0
        # a STORE step of a cache that evicts every few frames frees all of them or nothing
        steady = {cycle, 0} if fixed.stores and self.evict_every > 1 else {cycle}
        if any(count not in steady for count in fixed.counts):
            return None
        storage = ("budgeted", tuple(pool.keys.data_ptr() for pool in self._pools))
        return (storage, fixed.stores, fixed.counts, fixed.prefixes)

    def _attend(self, layer: int, frames: list[int], mode: StepMode, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        if self._fixed is not None:
            return self._attend_fixed(layer, q, k, v)
        pool = self._pools[layer]
        specials = self.num_special_tokens
        if mode is StepMode.SKIP:  # one frame: attended, not kept
            pool.stage_frame(k[0], v[0], frames[0], specials, self._patch_state(frames[0]))
            return self._attend_prefix(layer, q, pool.length + k.shape[1])[0]
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
        out, lse = self._attend_prefix(layer, q, pool.length, with_lse=self._mass_from_attention(pool))
        if self.policy.scorer == "attention_mass":  # over exactly the keys just attended
            rows, weights = stand_in_rows(q.shape[1], specials, self.policy.mass_queries, q.device)
            queries = stand_in_queries(q[0], specials, self.policy.mass_queries)[0]
            self._pending_mass[layer] = attention_mass(queries, weights, pool.keys[:pool.length],
                                                       lse=None if lse is None else lse.index_select(1, rows))
            if mode is StepMode.STORE:
                self._apply_mass(layer, statistic=self._snapshot_at_end)
        if mode is StepMode.STORE and self.policy.timing == "after":
            self._evict(layer)
        return out

    def _attend_fixed(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``_attend`` of a fixed-shape step: only device values and the ``FixedStep`` are read."""
        fixed, pool = self._fixed, self._pools[layer]
        values = self._step_values.values
        first = layer_values(layer)
        bounds = values[first + PREFIX:first + ATTEND_END + 1]
        pool.write_frame_at(k[0], v[0], values[first + START], values[FRAME], self.num_special_tokens, PATCH,
                           kept=fixed.stores)
        if not fixed.stores:  # SKIP: attended after the prefix, not kept
            return self._attend_range(layer, q, bounds)[0]
        appended = values[first + APPENDED]
        lengths = values[first + APPENDED:first + KEPT + 1]
        if fixed.recycling:
            pool.expire(values[RECYCLED], appended)
        if self.policy.timing == "before":
            self._evict_fixed(layer, appended, lengths)
        out, lse = self._attend_range(layer, q, bounds)
        ranking = None
        if self.policy.scorer == "attention_mass":  # over exactly the keys just attended: [0, appended)
            lse = lse if self._mass_from_attention(pool) else None
            ranking = self._score_fixed(layer, q[0], lse, appended)
        if self.policy.timing == "after":
            self._evict_fixed(layer, appended, lengths, ranking)
        return out

    def _score_fixed(self, layer: int, q: torch.Tensor, lse: torch.Tensor | None,
                     appended: torch.Tensor) -> torch.Tensor | None:
        """The attention mass of a fixed-shape STORE step over the slots below ``appended``, accumulated
        into the pool, and the layer statistic, computed at every step (the snapshot may take it: a
        step's work may not depend on the step number). Given the attention's log-sum-exp ``lse``
        ``[H, P]``, the fused kernels do it all and return the eviction ranking ``[C, 1]`` where the
        layer evicts; else torch ops, and None (``_evict_fixed`` ranks)."""
        pool, mode = self._pools[layer], self.policy.mass_queries
        rows, weights = stand_in_rows(q.shape[0], self.num_special_tokens, mode, q.device)
        if lse is not None:
            state = pool.state if self._fixed.counts[layer] else None
            return fused_mass.accumulate_mass(q, weights, lse, pool.keys, appended, rows, pool.mass,
                                              pool.exposure, self._statistics[layer:layer + 1], state)
        queries = stand_in_queries(q, self.num_special_tokens, mode)[0]
        mass = attention_mass(queries, weights, pool.keys, num_keys=appended)  # 0 past the length
        pool.mass += (mass * appended).unsqueeze(1)
        pool.exposure += pool.slots < appended
        self._statistics[layer] = concentration(mass, appended)
        return None

    def _mass_from_attention(self, pool: TokenPool) -> bool:
        """The attention mass is computed from the attention's log-sum-exp: only where the fused kernels
        run, so that elsewhere (CPU) the host-addressed and fixed-shape steps give the same bits."""
        return self.policy.scorer == "attention_mass" and fused_ranking.available(pool.keys)

    def _attend_range(self, layer: int, q: torch.Tensor,
                      bounds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame's queries ``[1, P, H, D]`` over the layer's captured prefix and the device range
        ``bounds``, and their log-sum-exp ``[H, P]`` (``PoolAttention.attend_range``)."""
        pool, prefix = self._pools[layer], self._fixed.prefixes[layer]
        out, lse = self._pool_attention.attend_range(layer, q[0], pool.keys, pool.values, prefix, bounds)
        return out.reshape(q.shape), lse  # in the storage's dtype, as the contiguous cache

    def _patch_state(self, frame: int) -> int:
        return SCALE_PATCH if frame < self.scale_frames else PATCH

    def _attend_prefix(self, layer: int, q: torch.Tensor, length: int,
                       with_lse: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One frame's queries ``[1, P, H, D]`` over the layer's first ``length`` slots; ``with_lse`` (CUDA in
        half precision): also their log-sum-exp ``[H, P]`` fp32 (``PoolAttention``), else None."""
        pool = self._pools[layer]
        if not self._on_cuda_in_half:
            return dense_attention(q, pool.keys[:length], pool.values[:length]), None
        steady, quantum = self._prefix_sizes(layer)
        out, lse = self._pool_attention(layer, q[0], pool.keys, pool.values, length, steady, quantum,
                                        with_lse)
        return out.transpose(1, 2).reshape(q.shape), lse  # in the storage's dtype, as the contiguous cache

    def _prefix_sizes(self, layer: int) -> tuple[int, int]:
        """(steady, quantum) of ``PoolAttention`` for ``layer``: the tokens the full layer holds when it
        attends, and one frame of patches. Those are its budget's patches (with eviction after the
        attention, its frame's too) and, once ``max_frames`` recycles a frame per step, the specials of
        ``max_frames`` frames: from then on their count is constant, and in the captured cuDNN prefix
        they cost ~9.8 us per 1,000 keys instead of the flash part's ~16 (H200; the window's step past
        ``max_frames`` 31.25 -> 30.44 ms with its own specials moved so, ``benchmarks/README.md``)."""
        patches = self._patches_per_frame or 1
        steady = self._budgets[layer] + (patches if self.policy.timing == "after" else 0)
        if self._specials_dropped:
            steady += self.num_special_tokens * self.max_frames
        return steady, CAPTURE_FRAMES * patches

    def _end(self, frames: list[int], mode: StepMode) -> None:
        self._dropping = []
        self._fixed = None
        if self._snapshot_at_end:
            self._snapshot.take(self._statistics)
            self._snapshot_at_end = False

    def _commit(self) -> None:
        dropping = self._over_max_frames()
        snapshot = self._count_allocation()  # the budgets of the deferred eviction
        for layer in range(self.num_layers):
            self._apply_mass(layer, statistic=snapshot)
            self._expire(layer, dropping)
        if snapshot:  # with the statistics of the deferred step
            self._snapshot.take(self._statistics)
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
        # the specials of max_frames frames, the step's and those of the recycled frames that wait for
        # the layer's next eviction
        special_frames = self.max_frames + 1 + self.evict_every if bounded else UNBOUNDED_SPECIAL_FRAMES
        capacity = (layer_ceiling(mean, floor) + self.evict_every * patches_per_frame
                    + self.num_special_tokens * special_frames)
        self._pools = []  # the previous size's pools are freed before the new ones are allocated
        self._pool_attention.clear()
        self._pools = [TokenPool(capacity, self.num_heads, self.head_dim, self.dtype, self.device,
                                 growable=not bounded) for _ in range(self.num_layers)]
        if self.policy.scorer == "key_diversity" and fused_ranking.available(self._pools[0].keys):
            for pool in self._pools:  # the fused ranking's candidate means, kept across steps
                pool.track_candidates(CandidateSums(self.num_heads, self.device))
        self._step_values = StepValues(layer_values(self.num_layers), self.device, torch.int32)

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

    def _count_allocation(self) -> bool:
        """Count a stored step; at every ``REALLOCATE_EVERY``-th re-allocate the budgets from the last
        snapshot and return True: the statistics of this step are to be snapshotted."""
        if self.policy.allocator == "uniform":
            return False
        self._stored_since_allocation += 1
        if self._stored_since_allocation < REALLOCATE_EVERY:
            return False
        self._stored_since_allocation = 0
        if self._snapshot.taken:
            budgets = layer_budgets(self.policy.allocator, self._snapshot.read(), self._mean_budget,
                                    self._floor, self.policy.temperature)
            move = max(abs(new - old) for new, old in zip(budgets, self._budgets, strict=True))
            if move >= BUDGET_MOVE_FRAMES * self._patches_per_frame:
                self._budgets = budgets
        return True

    def _apply_mass(self, layer: int, statistic: bool) -> None:
        """Accumulate the attention mass measured at this layer's last stored step (Evict3R: x keys);
        ``statistic``: also the layer's statistic (only a step that is snapshotted needs it)."""
        mass = self._pending_mass[layer]
        if mass is None:
            return
        pool, used = self._pools[layer], mass.shape[0]
        pool.mass[:used] += (mass * used).unsqueeze(1)
        pool.exposure[:used] += 1.0
        if statistic:
            self._statistics[layer] = concentration(mass)
        self._pending_mass[layer] = None

    def _eviction_count(self, layer: int) -> tuple[int, int]:
        """(patch slots over the budget, slots to free) of ``layer`` as it is now: (0, 0) until it holds
        ``evict_every`` frames of patches over its budget or as many recycled frames' specials."""
        patches = self._patches_per_frame or 1
        excess = max(0, self._patches[layer] - self._budgets[layer])
        if self.policy.granularity == "frame":
            excess = math.ceil(excess / patches) * patches
        if excess <= (self.evict_every - 1) * patches and self._expired[layer] < self.evict_every:
            return 0, 0
        return excess, excess + self.num_special_tokens * self._expired[layer]

    def _evict(self, layer: int) -> None:
        excess, count = self._eviction_count(layer)
        if count == 0:
            return
        pool = self._pools[layer]
        used = slice(0, pool.length)
        ranking = self._ranking(layer, used)
        pool.remove(evicted_slots(ranking, count, self.policy.granularity, self.policy.per_head,
                                  pool.frames[used]))
        self._patches[layer] -= excess
        self._expired[layer] = 0

    def _evict_fixed(self, layer: int, appended: torch.Tensor, lengths: torch.Tensor,
                     ranking: torch.Tensor | None = None) -> None:
        """``_evict`` of a fixed-shape step over the whole pool, the slots from ``appended`` (its length
        after the append) masked; ``lengths``: [before, after] the eviction (all on the device);
        ``ranking``: the pool's, where the scoring already made it (``_score_fixed``)."""
        count = self._fixed.counts[layer]
        if count == 0:
            return
        pool = self._pools[layer]
        if ranking is None:
            ranking = self._ranking(layer, slice(None), appended)
        pool.remove(evicted_slots(ranking, count, "token", self.policy.per_head, pool.frames), lengths)

    def _ranking(self, layer: int, used: slice, length: torch.Tensor | None = None) -> torch.Tensor:
        """The eviction ranking (lowest first) of ``layer``'s slots ``used``: ``[N, H]``, or ``[N, 1]`` for a
        head-shared scorer; the diversity scorers set the statistic. ``length`` (a 0-d device tensor, the
        whole pool ``used``): the slots from it on are not in use (``TokenPool.in_use``)."""
        pool = self._pools[layer]
        keys, frames = pool.keys[used], pool.frames[used]
        if self.policy.scorer == "key_diversity" and fused_ranking.available(keys):  # masks past ``length``
            totals = None if pool.candidates is None else pool.candidates.totals
            by_head, self._statistics[layer] = fused_diversity.diversity_ranking(
                keys, frames, pool.state[used], num_keys=length, totals=totals)
            return by_head.t()
        state = pool.state[used] if length is None else pool.in_use(length)
        # head-shared scorers rank by head 0 alone (every head holds the same tokens and scores)
        if self.policy.scorer == "recency":
            return state_scores(recency_scores(frames[:, :1]), state[:, :1])
        if self.policy.scorer == "attention_mass" and fused_ranking.available(keys):
            return fused_mass.mass_ranking(pool.mass[used], pool.exposure[used], state)
        if self.policy.scorer == "attention_mass":
            return state_scores(mass_scores(pool.mass[used, :1], pool.exposure[used, :1]), state[:, :1])
        scores, self._statistics[layer] = diversity_scores(keys, frames, evictable_patches(state))
        return state_scores(scores, state)

    def _fixed_step(self, frames: list[int], mode: StepMode) -> FixedStep | None:
        """For a step that runs in fixed shapes: its host bookkeeping, done now, and its step values;
        None for any other step (see the module docstring)."""
        stores = mode is StepMode.STORE
        if not (self.fixed_shape and mode is not StepMode.DEFER and len(frames) == 1
                and frames[0] >= self.scale_frames and self.policy.granularity == "token"
                and len(self._dropping) <= 1):
            return None
        patches, specials = self._patches_per_frame, self.num_special_tokens
        recycled = self._dropping[0] if self._dropping else -1
        values, counts, prefixes = [frames[0], recycled], [], []
        for layer, pool in enumerate(self._pools):
            start = pool.length
            appended = start + patches + specials
            pool.reserve(appended)  # an unbounded pool grows now, never inside the step
            count = 0
            if stores:
                self._patches[layer] += patches
                self._expired[layer] += len(self._dropping)
                excess, count = self._eviction_count(layer)
                if count:
                    self._patches[layer] -= excess
                    self._expired[layer] = 0
                pool.length = appended - count
            kept = appended - count
            attended = kept if stores and self.policy.timing == "before" else appended
            prefix = self._pool_attention.prefix(layer, *self._prefix_sizes(layer))
            prefix = prefix if prefix < attended else 0
            values += [prefix, attended, start, appended, kept]
            counts.append(count)
            prefixes.append(prefix)
        self._step_values.set(values)
        return FixedStep(stores, tuple(counts), tuple(prefixes), bool(self._dropping))
