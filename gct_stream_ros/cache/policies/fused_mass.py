"""Evict3r's attention mass as fused CUDA kernels (Triton), for bf16/fp16 keys.

Written with torch ops, one scoring pass over ~36k-70k keys x 16 heads is a dozen kernels, each
reading and writing fp32 tensors of ``[H, Q, K]`` (measured on the H200: ~1.2 ms per layer, most of
it in fp32 intermediates), and each op costs the host its launch. Here the pass reads the keys once,
as stored, and accumulates in fp32 in registers:

* ``attention_mass``: the same quantity as ``attention_mass.attention_mass`` (its module
  docstring) in one pass over the keys, given each query's log-sum-exp (the attention's own,
  ``pool_attention.py``): one program per block of keys and head loops over the queries and
  sums ``weight_q x exp(s - lse)`` in fp32 (``[H, K]``), a second kernel takes the mean over the
  heads in a fixed order (no atomics). Logits are ``tl.dot`` products of the stored keys with the queries
  (bf16/fp16 operands, fp32 accumulation; Triton's interpreter, which runs the CPU tests, gets
  fp32 operands). The queries may be chosen by ``rows`` (the sampled ones) without a gather
  before. Given ``num_keys`` on the device (a fixed-shape step, ``budgeted_cache.py``), blocks
  past that count read nothing and get 0.
* ``accumulate_mass``: the same kernels, the second finishing a fixed-shape step's scoring:
  the pool's mass and exposure updated for every head, evict3r's ranking of head 0 (as
  ``mass_ranking``, the slots past the count FREE) and each block's sums of mass and mass^2,
  which one more single-program kernel turns into the layer statistic (``concentration``):
  deterministic, no atomics.
* ``mass_ranking``: evict3r's ranking, ``state_scores(mass_scores(...))`` of head 0, in one kernel
  (the host-addressed steps').

Where these run and what tests them: ``fused_ranking.py``.
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.policies.token_pool import FREE
from gct_stream_ros.optional_packages import TRITON

MASS_BLOCK_KEYS = 128
"""Keys per tile of the attention mass."""
MASS_BLOCKS_PER_PROGRAM = 8
MASS_STAGES = 3
"""Tiles of keys per program of the attention mass, one head's, and the stages of their software pipeline:
the sampled queries are loaded once per program and the next tiles' keys while one is computed. Swept
on the H200 (71k keys of 108k slots, 16 heads, 64 queries, replayed from a CUDA graph): 1 tile a
program 66 us, 8 tiles at 3 stages 46 us (2 stages 56, 1 stage 60; 4 tiles 46-49; 8 warps 52-74;
64-key tiles within 1 us), against ~37 us for reading the keys alone."""
QUERY_TILE = 16
"""The narrowest tile of queries of the attention mass (a ``tl.dot`` operand is at least 16 wide)."""

if TRITON:
    import triton
    import triton.language as tl

    from gct_stream_ros.cache.policies.fused_ranking import ranked

    _FREE = tl.constexpr(FREE)

    @triton.jit
    def _query_tile(q_ptr, lse_ptr, row_ptr, weight_ptr, head, q_start, q_stride_n, q_stride_h, lse_stride_h,
                    lse_stride_q, num_queries: tl.constexpr, block_q: tl.constexpr, head_dim: tl.constexpr,
                    gather: tl.constexpr, upcast: tl.constexpr):
        """One head's queries ``[block_q, D]`` from ``q_start``, their log-sum-exps and weights ``[block_q]``;
        padded queries get weight 0 and a finite log-sum-exp, so they add 0 (not nan)."""
        q_index = q_start + tl.arange(0, block_q)
        q_valid = q_index < num_queries
        row = tl.load(row_ptr + q_index, mask=q_valid, other=0) if gather else q_index
        q = tl.load(q_ptr + row[:, None] * q_stride_n + head * q_stride_h + tl.arange(0, head_dim)[None, :],
                    mask=q_valid[:, None], other=0.0)
        if upcast:  # Triton's interpreter (CPU tests): its half-precision dot is not to be trusted
            q = q.to(tl.float32)
        lse = tl.load(lse_ptr + head * lse_stride_h + row * lse_stride_q, mask=q_valid, other=0.0)
        return q, lse, tl.load(weight_ptr + q_index, mask=q_valid, other=0.0)

    @triton.jit
    def _tile_mass(k, q, lse, weight, scale):
        """``sum_q weight_q exp(s - lse_q)`` ``[block_k]`` fp32 of keys ``k`` and one tile of queries."""
        logits = tl.dot(k, tl.trans(q)) * scale  # [block_k, block_q] fp32: keys fill the rows
        return tl.sum(tl.exp(logits - lse[None, :]) * weight[None, :], axis=1)

    @triton.jit
    def _head_mass(q_ptr, lse_ptr, row_ptr, weight_ptr, k_ptr, by_head_ptr, count_ptr, num_keys, scale,
                   q_stride_n, q_stride_h, lse_stride_h, lse_stride_q, k_stride_n, k_stride_h,
                   num_queries: tl.constexpr, block_q: tl.constexpr, block_k: tl.constexpr,
                   blocks_per_program: tl.constexpr, head_dim: tl.constexpr, gather: tl.constexpr,
                   on_device: tl.constexpr, upcast: tl.constexpr):
        """One head's share of ``blocks_per_program`` consecutive blocks of keys,
        ``sum_q weight_q exp(s - lse)`` (``by_head`` ``[H, K]``); keys past those in use are not read or
        written (``_finish_mass`` masks them)."""
        # the heads vary fastest: the programs running together read the same keys, every head of them,
        # contiguously (66 against 81 us a layer the other way round, on the H200 at 71k keys)
        head, group = tl.program_id(0), tl.program_id(1)
        in_use = tl.load(count_ptr) if on_device else num_keys
        first = group * blocks_per_program * block_k
        if first < in_use:
            dims = tl.arange(0, head_dim)
            one_tile: tl.constexpr = num_queries <= block_q
            if one_tile:  # loaded once for all the program's keys (the sampled queries)
                q, lse, weight = _query_tile(q_ptr, lse_ptr, row_ptr, weight_ptr, head, 0, q_stride_n,
                                             q_stride_h, lse_stride_h, lse_stride_q, num_queries, block_q,
                                             head_dim, gather, upcast)
            for block in range(blocks_per_program):
                k_index = first + block * block_k + tl.arange(0, block_k)
                k_valid = k_index < in_use
                k = tl.load(k_ptr + k_index[:, None] * k_stride_n + head * k_stride_h + dims[None, :],
                            mask=k_valid[:, None], other=0.0)
                if upcast:
                    k = k.to(tl.float32)
                if one_tile:
                    total = _tile_mass(k, q, lse, weight, scale)
                else:
                    total = tl.zeros([block_k], tl.float32)
                    for q_start in range(0, num_queries, block_q):
                        tile_q, tile_lse, tile_weight = _query_tile(
                            q_ptr, lse_ptr, row_ptr, weight_ptr, head, q_start, q_stride_n, q_stride_h,
                            lse_stride_h, lse_stride_q, num_queries, block_q, head_dim, gather, upcast)
                        total += _tile_mass(k, tile_q, tile_lse, tile_weight, scale)
                tl.store(by_head_ptr + head * num_keys + k_index, total, mask=k_valid)

    @triton.jit
    def _finish_mass(by_head_ptr, mass_ptr, pool_mass_ptr, exposure_ptr, state_ptr, ranking_ptr, partial_ptr,
                     count_ptr, num_keys, cell_stride, num_heads: tl.constexpr, block_k: tl.constexpr,
                     heads_block: tl.constexpr, on_device: tl.constexpr, accumulate: tl.constexpr,
                     rank: tl.constexpr):
        """The head-mean mass of a block of keys from ``by_head``; stored (``mass_ptr``), or (``accumulate``)
        added to the pool's mass x the keys in use, with the exposure, head 0's ranking (``rank``) and the
        block's sums of mass and mass^2 (``partial_ptr``)."""
        k_block = tl.program_id(0)
        in_use = tl.load(count_ptr) if on_device else num_keys
        k_index = k_block * block_k + tl.arange(0, block_k)
        k_stored = k_index < num_keys
        k_valid = k_index < in_use
        heads = tl.arange(0, heads_block)
        head_valid = heads[None, :] < num_heads
        shares = tl.load(by_head_ptr + heads[None, :] * num_keys + k_index[:, None],
                         mask=k_valid[:, None] & head_valid, other=0.0)
        mass = tl.sum(shares, axis=1) / num_heads  # 0 past the keys in use
        if accumulate:  # the fixed-shape step's ``pool.mass += mass * in_use``, ``exposure += slot < in_use``
            cells = k_index[:, None] * cell_stride + heads[None, :]
            cell_valid = k_valid[:, None] & head_valid
            pool_mass = (tl.load(pool_mass_ptr + cells, mask=cell_valid, other=0.0)
                         + (mass * in_use.to(tl.float32))[:, None])
            exposure = tl.load(exposure_ptr + cells, mask=cell_valid, other=0.0) + 1.0
            tl.store(pool_mass_ptr + cells, pool_mass, mask=cell_valid)
            tl.store(exposure_ptr + cells, exposure, mask=cell_valid)
            tl.store(partial_ptr + 2 * k_block, tl.sum(mass, axis=0))
            tl.store(partial_ptr + 2 * k_block + 1, tl.sum(mass * mass, axis=0))
            if rank:  # ``mass_ranking`` of head 0 over ``TokenPool.in_use``: FREE past the keys in use
                first_head = heads[None, :] == 0
                state = tl.load(state_ptr + k_index * cell_stride, mask=k_valid, other=_FREE)
                scores = tl.math.div_rn(tl.sum(tl.where(first_head, pool_mass, 0.0), axis=1),
                                        tl.maximum(tl.sum(tl.where(first_head, exposure, 0.0), axis=1), 1.0))
                tl.store(ranking_ptr + k_index, ranked(scores, state), mask=k_stored)
        else:
            tl.store(mass_ptr + k_index, mass, mask=k_stored)

    @triton.jit
    def _concentration(partial_ptr, count_ptr, out_ptr, num_blocks: tl.constexpr, block: tl.constexpr):
        """``attention_mass.concentration`` from the blocks' sums: ``log(1 + S2 K / S1^2 - 1)``, one program,
        the sums in fp64 (the difference cancels)."""
        total = tl.zeros([block], tl.float64)
        squares = tl.zeros([block], tl.float64)
        for start in range(0, num_blocks, block):
            index = start + tl.arange(0, block)
            valid = index < num_blocks
            total += tl.load(partial_ptr + 2 * index, mask=valid, other=0.0).to(tl.float64)
            squares += tl.load(partial_ptr + 2 * index + 1, mask=valid, other=0.0).to(tl.float64)
        mass, square = tl.sum(total, axis=0), tl.sum(squares, axis=0)
        count = tl.load(count_ptr).to(tl.float64)
        variance = tl.maximum(square * count / (mass * mass) - 1.0, 0.0).to(tl.float32)
        grown = 1.0 + variance  # log1p(variance) without its rounding: log(u) * variance / (u - 1)
        tl.store(out_ptr, tl.where(grown == 1.0, variance, tl.log(grown) * (variance / (grown - 1.0))))

    @triton.jit
    def _mass_ranking(mass_ptr, exposure_ptr, state_ptr, ranking_ptr, num_keys, stride, block: tl.constexpr):
        index = tl.program_id(0) * block + tl.arange(0, block)
        valid = index < num_keys
        mass = tl.load(mass_ptr + index * stride, mask=valid, other=0.0)
        exposure = tl.load(exposure_ptr + index * stride, mask=valid, other=1.0)
        state = tl.load(state_ptr + index * stride, mask=valid, other=0)
        scores = tl.math.div_rn(mass, tl.maximum(exposure, 1.0))  # IEEE division, as torch's
        tl.store(ranking_ptr + index, ranked(scores, state), mask=valid)


def attention_mass(queries: torch.Tensor, weights: torch.Tensor, lse: torch.Tensor, keys: torch.Tensor,
                   num_keys: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``attention_mass.attention_mass`` fused, given the log-sum-exp: queries ``[P, H, D]`` and their
    log-sum-exp ``[H, P]`` fp32 over the (first ``num_keys``, a 0-d int32 device tensor) keys
    ``[K, H, D]``; ``rows`` ``[Q]``: the queries that count (all where None), weighted by ``weights`` ``[Q]``.
    Returns ``[K]`` fp32, 0 past ``num_keys``."""
    mass = torch.empty(keys.shape[0], dtype=torch.float32, device=keys.device)
    _launch_mass(queries, weights, lse, keys, num_keys, rows, mass=mass)
    return mass


def accumulate_mass(queries: torch.Tensor, weights: torch.Tensor, lse: torch.Tensor, keys: torch.Tensor,
                    num_keys: torch.Tensor, rows: torch.Tensor | None, pool_mass: torch.Tensor,
                    exposure: torch.Tensor, statistic: torch.Tensor,
                    state: torch.Tensor | None = None) -> torch.Tensor | None:
    """A fixed-shape step's scoring in two kernels: ``mass = attention_mass(...)`` (arguments as there), then
    ``pool_mass += mass * num_keys`` and ``exposure += slot < num_keys`` (``[C, H]``, every head),
    ``statistic`` (a 1-element view) ``= concentration(mass, num_keys)``, and where ``state`` ``[C, H]``
    is given the ranking ``[C, 1]`` ``mass_ranking(pool_mass, exposure, in_use(num_keys))`` of the
    updated mass: the slots past ``num_keys`` are FREE (``token_pool.py``), never evicted."""
    num_blocks = triton.cdiv(keys.shape[0], MASS_BLOCK_KEYS)
    partials = torch.empty(num_blocks, 2, dtype=torch.float32, device=keys.device)
    ranking = None if state is None else torch.empty(keys.shape[0], 1, dtype=torch.float32,
                                                     device=keys.device)
    _launch_mass(queries, weights, lse, keys, num_keys, rows, pool_mass=pool_mass, exposure=exposure,
                 state=state, ranking=ranking, partials=partials)
    _concentration[(1,)](partials, num_keys, statistic, num_blocks=num_blocks, block=1024)
    return ranking


def _query_block(num_queries: int) -> int:
    """The queries per tile of ``_head_mass`` that pad ``num_queries`` least (the larger on a tie): every
    padded query costs each key an exponential. The sampled queries fill whole tiles of ``QUERY_TILE``
    (``attention_mass.sampled_groups``): 64 in one tile took 66 us a layer on the H200 at 71k keys
    (one tile of keys a program), where 67 in five tiles of 16 took 90."""
    return min((QUERY_TILE, 32, 64), key=lambda block: (triton.cdiv(num_queries, block) * block, -block))


def _launch_mass(queries: torch.Tensor, weights: torch.Tensor, lse: torch.Tensor, keys: torch.Tensor,
                 num_keys: torch.Tensor | None, rows: torch.Tensor | None, mass: torch.Tensor | None = None,
                 pool_mass: torch.Tensor | None = None, exposure: torch.Tensor | None = None,
                 state: torch.Tensor | None = None, ranking: torch.Tensor | None = None,
                 partials: torch.Tensor | None = None) -> None:
    """``_head_mass`` over every (block of keys, head), then ``_finish_mass``: storing ``mass``, or
    accumulating into ``pool_mass`` (see its docstring); the pointers a launch does not use point at
    ``keys`` and are never read. A program per head (not one looping over the heads) keeps enough of them
    in flight to hide the loads: 175 us a layer at 71k keys with the loop, on the H200."""
    num_keys_stored, num_heads, head_dim = keys.shape
    queries = queries.to(keys.dtype)
    if queries.stride(-1) != 1:  # the kernel reads each query's dims contiguously
        queries = queries.contiguous()
    num_queries = queries.shape[0] if rows is None else rows.shape[0]
    count = keys if num_keys is None else num_keys
    on_device = num_keys is not None
    blocks = triton.cdiv(num_keys_stored, MASS_BLOCK_KEYS)
    by_head = torch.empty(num_heads, num_keys_stored, dtype=torch.float32, device=keys.device)
    _head_mass[(num_heads, triton.cdiv(blocks, MASS_BLOCKS_PER_PROGRAM))](
        queries, lse, keys if rows is None else rows, weights.float(), keys, by_head, count, num_keys_stored,
        head_dim**-0.5, queries.stride(0), queries.stride(1), lse.stride(0), lse.stride(1), keys.stride(0),
        keys.stride(1), num_queries=num_queries, block_q=_query_block(num_queries), block_k=MASS_BLOCK_KEYS,
        blocks_per_program=MASS_BLOCKS_PER_PROGRAM, head_dim=head_dim, gather=rows is not None,
        on_device=on_device, upcast=not keys.is_cuda, num_stages=MASS_STAGES)
    accumulate = pool_mass is not None
    cells = pool_mass if accumulate else keys
    _finish_mass[(blocks,)](
        by_head, keys if mass is None else mass, cells, keys if exposure is None else exposure,
        keys if state is None else state, keys if ranking is None else ranking,
        keys if partials is None else partials, count, num_keys_stored, cells.stride(0), num_heads=num_heads,
        block_k=MASS_BLOCK_KEYS, heads_block=triton.next_power_of_2(num_heads), on_device=on_device,
        accumulate=accumulate, rank=ranking is not None)


def mass_ranking(mass: torch.Tensor, exposure: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """``state_scores(mass_scores(mass[:, :1], exposure[:, :1]), state[:, :1])``: ``[N, H]`` -> ``[N, 1]``."""
    num_keys = mass.shape[0]
    ranking = torch.empty(num_keys, 1, dtype=torch.float32, device=mass.device)
    block = 1024
    _mass_ranking[(triton.cdiv(num_keys, block),)](mass, exposure, state, ranking, num_keys, mass.stride(0),
                                                   block=block)
    return ranking
