"""The scorers' passes over a layer's cached keys as fused CUDA kernels (Triton), for bf16/fp16 keys.

Written with torch ops, one scoring pass over ~36k-70k keys x 16 heads is a dozen kernels, each
reading and writing fp32 tensors of ``[H, Q, K]`` or ``[N, H, D]`` (measured on the H200:
~1.2 ms per layer for the attention mass, ~1 ms for the key diversity, most of it in fp32
intermediates and in matrix-vector products that cuBLAS runs on 16 thread blocks), and each op
costs the host its launch. Here each pass reads the keys once, as stored, and accumulates in
fp32 in registers:

* ``attention_mass``: the same quantity as ``attention_mass.attention_mass`` (its module
  docstring) in one pass over the keys, given each query's log-sum-exp (the attention's own,
  ``pool_attention.py``): one program per block of keys loops over the heads and the queries
  and sums ``weight_q x exp(s - lse)`` in fp32, so the head-mean mass is written directly (no
  ``[H, K]`` intermediate). Logits are ``tl.dot`` products of the stored keys with the queries
  (bf16/fp16 operands, fp32 accumulation; Triton's interpreter, which runs the CPU tests, gets
  fp32 operands). The queries may be chosen by ``rows`` (the sampled ones) without a gather
  before. Given ``num_keys`` on the device (a fixed-shape step, ``budgeted_cache.py``), blocks
  past that count read nothing and get 0.
* ``accumulate_mass``: the same kernel finishing a fixed-shape step's scoring in its programs:
  the pool's mass and exposure updated for every head, evict3r's ranking of head 0 (as
  ``mass_ranking``, the slots past the count FREE) and each block's sums of mass and mass^2,
  which one more single-program kernel turns into the layer statistic (``concentration``):
  deterministic, no atomics.
* ``mass_ranking``: evict3r's ranking, ``state_scores(mass_scores(...))`` of head 0, in one kernel
  (the host-addressed steps').
* ``diversity_ranking``: ``scorers.diversity_scores`` followed by ``token_pool.state_scores``,
  transposed: pass 1 sums the un-rotated, normalised candidate keys per head (partials per
  chunk), pass 2 scores every key against its head's mean and writes the eviction ranking
  ``[H, N]`` contiguous (protected +inf, expired first), so that the per-head top-k reads
  contiguous rows. Only the first 16 dim pairs go through the rotation (the temporal band is
  pairs 0..9); the kernels are written for the model's head dim, 64.

Used only where ``available(keys)``; every other device/dtype runs the torch code, which the
CPU tests pin; they also run the mass kernels through Triton's interpreter (``test/test_fused_mass.py``).
The CUDA tests (``test/gpu/test_cache_policies_gpu.py``) check these kernels
against the torch and float64 reference computations.
"""

from __future__ import annotations

import functools

import torch

from gct_stream_ros.cache.policies.fused_moves import TRITON
from gct_stream_ros.cache.policies.temporal_rope import TEMPORAL_PAIRS, rope_frequencies
from gct_stream_ros.cache.policies.token_pool import EXPIRED_PATCH, EXPIRED_SPECIAL, FREE, PATCH

HEAD_DIM = 64
MASS_BLOCK_KEYS = 128
"""Keys per program of the attention mass (each loops over the heads and the queries)."""
DIVERSITY_CHUNK_KEYS = 256
"""Keys per program of the diversity passes (more programs: each key costs them more)."""
BLOCK_KEYS = 64
ROTATED_PAIRS = 16
"""Dim pairs that go through the rotation: the temporal band's 10, padded to a power of two."""
FP32_LOWEST = torch.finfo(torch.float32).min


def available(keys: torch.Tensor) -> bool:
    """The fused kernels serve these keys: CUDA, half precision, head dim 64, Triton installed."""
    return (TRITON and keys.is_cuda and keys.dtype in (torch.bfloat16, torch.float16)
            and keys.shape[-1] == HEAD_DIM)


if TRITON:
    import triton
    import triton.language as tl

    _PATCH, _EXPIRED_PATCH, _EXPIRED_SPECIAL = (tl.constexpr(state) for state in (PATCH, EXPIRED_PATCH,
                                                                                   EXPIRED_SPECIAL))
    _FP32_LOWEST = tl.constexpr(FP32_LOWEST)
    _FREE = tl.constexpr(FREE)
    _PAIRS = tl.constexpr(ROTATED_PAIRS)

    @triton.jit
    def _ranked(scores, state):
        """``token_pool.state_scores``: protected never go, expired go first, specials first."""
        ranking = tl.where(state == _PATCH, scores, float("inf"))
        ranking = tl.where(state == _EXPIRED_PATCH, _FP32_LOWEST, ranking)
        return tl.where(state == _EXPIRED_SPECIAL, float("-inf"), ranking)

    @triton.jit
    def _mass(q_ptr, lse_ptr, row_ptr, weight_ptr, k_ptr, mass_ptr, pool_mass_ptr, exposure_ptr, state_ptr,
              ranking_ptr, partial_ptr, count_ptr, num_keys, scale, q_stride_n, q_stride_h, lse_stride_h,
              lse_stride_q, k_stride_n, k_stride_h, cell_stride, num_queries: tl.constexpr,
              num_heads: tl.constexpr, block_q: tl.constexpr, block_k: tl.constexpr, head_dim: tl.constexpr,
              heads_block: tl.constexpr,
              gather: tl.constexpr, on_device: tl.constexpr, accumulate: tl.constexpr, rank: tl.constexpr,
              upcast: tl.constexpr):
        """The head-mean mass of a block of keys; stored (``mass_ptr``), or (``accumulate``) added to the
        pool's mass x the keys in use, with the exposure, head 0's ranking (``rank``) and the block's
        sums of mass and mass^2 (``partial_ptr``)."""
        k_block = tl.program_id(0)
        in_use = tl.load(count_ptr) if on_device else num_keys
        k_index = k_block * block_k + tl.arange(0, block_k)
        k_stored = k_index < num_keys
        k_valid = k_index < in_use
        dims = tl.arange(0, head_dim)
        total = tl.zeros([block_k], tl.float32)
        if k_block * block_k < in_use:  # a block past the keys in use reads nothing and stays 0
            for head in range(0, num_heads):
                k = tl.load(k_ptr + k_index[:, None] * k_stride_n + head * k_stride_h + dims[None, :],
                            mask=k_valid[:, None], other=0.0)
                if upcast:  # Triton's interpreter (CPU tests): its half-precision dot is not to be trusted
                    k = k.to(tl.float32)
                for q_start in range(0, num_queries, block_q):
                    q_index = q_start + tl.arange(0, block_q)
                    q_valid = q_index < num_queries
                    row = tl.load(row_ptr + q_index, mask=q_valid, other=0) if gather else q_index
                    q = tl.load(q_ptr + row[:, None] * q_stride_n + head * q_stride_h + dims[None, :],
                                mask=q_valid[:, None], other=0.0)
                    if upcast:
                        q = q.to(tl.float32)
                    # padded queries: weight 0 and a finite log-sum-exp, so they add 0 (not nan)
                    lse = tl.load(lse_ptr + head * lse_stride_h + row * lse_stride_q, mask=q_valid, other=0.0)
                    weight = tl.load(weight_ptr + q_index, mask=q_valid, other=0.0)
                    logits = tl.dot(k, tl.trans(q)) * scale  # [block_k, block_q] fp32: keys fill the rows
                    total += tl.sum(tl.exp(logits - lse[None, :]) * weight[None, :], axis=1)
        mass = tl.where(k_valid, total / num_heads, 0.0)
        if accumulate:  # the fixed-shape step's ``pool.mass += mass * in_use``, ``exposure += slot < in_use``
            heads = tl.arange(0, heads_block)
            cells = k_index[:, None] * cell_stride + heads[None, :]
            cell_valid = k_valid[:, None] & (heads[None, :] < num_heads)
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
                tl.store(ranking_ptr + k_index, _ranked(scores, state), mask=k_stored)
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
        tl.store(ranking_ptr + index, _ranked(scores, state), mask=valid)

    @triton.jit
    def _key_tile(k_ptr, frame_ptr, state_ptr, frequency_ptr, first, num_keys, head, num_heads, k_stride_n,
                  k_stride_h, block_k: tl.constexpr, head_dim: tl.constexpr):
        """Keys ``[first, first + block_k)`` of ``head`` as (valid, index, x, y, rest, norm, state): the
        first 16 dim pairs ``[block_k, 16]`` each with their temporal rotation removed, the dims from
        32 on ``[block_k, D - 32]`` as stored, all fp32, the norms and the slot states."""
        k_index = first + tl.arange(0, block_k)
        k_valid = k_index < num_keys
        pairs = tl.arange(0, _PAIRS)
        rows = k_ptr + k_index[:, None] * k_stride_n + head * k_stride_h
        x = tl.load(rows + 2 * pairs[None, :], mask=k_valid[:, None], other=0.0).to(tl.float32)
        y = tl.load(rows + 2 * pairs[None, :] + 1, mask=k_valid[:, None], other=0.0).to(tl.float32)
        rest_dims = 2 * _PAIRS + tl.arange(0, head_dim - 2 * _PAIRS)
        rest = tl.load(rows + rest_dims[None, :], mask=k_valid[:, None], other=0.0).to(tl.float32)
        frame = tl.load(frame_ptr + k_index * num_heads + head, mask=k_valid, other=0).to(tl.float32)
        angle = -frame[:, None] * tl.load(frequency_ptr + pairs)[None, :]  # 0 past the temporal band
        cos, sin = tl.cos(angle), tl.sin(angle)
        norm = tl.maximum(tl.sqrt(tl.sum(x * x + y * y, axis=1) + tl.sum(rest * rest, axis=1)), 1e-12)
        state = tl.load(state_ptr + k_index * num_heads + head, mask=k_valid, other=255)
        return k_valid, k_index, x * cos - y * sin, x * sin + y * cos, rest, norm, state

    @triton.jit
    def _diversity_sums(k_ptr, frame_ptr, state_ptr, frequency_ptr, sum_ptr, count_ptr, num_keys, num_heads,
                        num_parts, k_stride_n, k_stride_h,
                        chunk: tl.constexpr, block_k: tl.constexpr, head_dim: tl.constexpr):
        head, part = tl.program_id(0), tl.program_id(1)
        total_x = tl.zeros([_PAIRS], tl.float32)
        total_y = tl.zeros([_PAIRS], tl.float32)
        total_rest = tl.zeros([head_dim - 2 * _PAIRS], tl.float32)
        count = tl.zeros([block_k], tl.float32)
        for offset in range(0, chunk, block_k):
            _, _, x, y, rest, norm, state = _key_tile(k_ptr, frame_ptr, state_ptr, frequency_ptr,
                                                      part * chunk + offset, num_keys, head, num_heads,
                                                      k_stride_n, k_stride_h, block_k, head_dim)
            weight = tl.where(state == _PATCH, 1.0 / norm, 0.0)[:, None]
            total_x += tl.sum(x * weight, axis=0)
            total_y += tl.sum(y * weight, axis=0)
            total_rest += tl.sum(rest * weight, axis=0)
            count += tl.where(state == _PATCH, 1.0, 0.0)
        row = sum_ptr + (head * num_parts + part) * head_dim  # laid out as (x, y, rest)
        tl.store(row + tl.arange(0, _PAIRS), total_x)
        tl.store(row + _PAIRS + tl.arange(0, _PAIRS), total_y)
        tl.store(row + 2 * _PAIRS + tl.arange(0, head_dim - 2 * _PAIRS), total_rest)
        tl.store(count_ptr + head * num_parts + part, tl.sum(count, axis=0))

    @triton.jit
    def _diversity_ranking(k_ptr, frame_ptr, state_ptr, frequency_ptr, mean_ptr, ranking_ptr, similarity_ptr,
                           num_keys, num_heads, num_parts, k_stride_n, k_stride_h,
                           chunk: tl.constexpr, block_k: tl.constexpr, head_dim: tl.constexpr):
        head, part = tl.program_id(0), tl.program_id(1)
        mean = mean_ptr + head * head_dim  # laid out as (x, y, rest)
        mean_x = tl.load(mean + tl.arange(0, _PAIRS))
        mean_y = tl.load(mean + _PAIRS + tl.arange(0, _PAIRS))
        mean_rest = tl.load(mean + 2 * _PAIRS + tl.arange(0, head_dim - 2 * _PAIRS))
        total = tl.zeros([block_k], tl.float32)
        for offset in range(0, chunk, block_k):
            k_valid, k_index, x, y, rest, norm, state = _key_tile(k_ptr, frame_ptr, state_ptr, frequency_ptr,
                                                                  part * chunk + offset, num_keys, head,
                                                                  num_heads, k_stride_n, k_stride_h, block_k,
                                                                  head_dim)
            dot = (tl.sum(x * mean_x[None, :], axis=1) + tl.sum(y * mean_y[None, :], axis=1)
                   + tl.sum(rest * mean_rest[None, :], axis=1))
            similarity = dot / norm
            tl.store(ranking_ptr + head * num_keys + k_index, _ranked(-similarity, state), mask=k_valid)
            total += tl.where(state == _PATCH, similarity, 0.0)
        tl.store(similarity_ptr + head * num_parts + part, tl.sum(total, axis=0))


@functools.cache
def _pair_frequencies(device: torch.device) -> torch.Tensor:
    """The temporal RoPE frequency of the rotated dim pairs ``[16]`` (0 past the band), built once."""
    frequency = torch.zeros(ROTATED_PAIRS, dtype=torch.float32, device=device)
    frequency[:TEMPORAL_PAIRS] = rope_frequencies(device)
    return frequency


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
    """The queries per tile of ``_mass`` that pad ``num_queries`` least (the larger on a tie): every padded
    query costs each key an exponential, the kernel's other bound besides reading the keys."""
    return min((16, 32, 64), key=lambda block: (triton.cdiv(num_queries, block) * block, -block))


def _launch_mass(queries: torch.Tensor, weights: torch.Tensor, lse: torch.Tensor, keys: torch.Tensor,
                 num_keys: torch.Tensor | None, rows: torch.Tensor | None, mass: torch.Tensor | None = None,
                 pool_mass: torch.Tensor | None = None, exposure: torch.Tensor | None = None,
                 state: torch.Tensor | None = None, ranking: torch.Tensor | None = None,
                 partials: torch.Tensor | None = None) -> None:
    """One launch of ``_mass``: storing ``mass``, or accumulating into ``pool_mass`` (see its docstring);
    the pointers a launch does not use point at ``keys`` and are never read."""
    num_heads, head_dim = keys.shape[1:]
    queries = queries.to(keys.dtype)
    if queries.stride(-1) != 1:  # the kernel reads each query's dims contiguously
        queries = queries.contiguous()
    num_queries = queries.shape[0] if rows is None else rows.shape[0]
    accumulate = pool_mass is not None
    cells = pool_mass if accumulate else keys
    _mass[(triton.cdiv(keys.shape[0], MASS_BLOCK_KEYS),)](
        queries, lse, keys if rows is None else rows, weights.float(), keys, keys if mass is None else mass,
        cells, keys if exposure is None else exposure, keys if state is None else state,
        keys if ranking is None else ranking, keys if partials is None else partials,
        keys if num_keys is None else num_keys, keys.shape[0], head_dim**-0.5, queries.stride(0),
        queries.stride(1), lse.stride(0), lse.stride(1), keys.stride(0), keys.stride(1), cells.stride(0),
        num_queries=num_queries, num_heads=num_heads, block_q=_query_block(num_queries),
        block_k=MASS_BLOCK_KEYS, head_dim=head_dim, heads_block=triton.next_power_of_2(num_heads),
        gather=rows is not None, on_device=num_keys is not None, accumulate=accumulate,
        rank=ranking is not None, upcast=not keys.is_cuda)


def mass_ranking(mass: torch.Tensor, exposure: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """``state_scores(mass_scores(mass[:, :1], exposure[:, :1]), state[:, :1])``: ``[N, H]`` -> ``[N, 1]``."""
    num_keys = mass.shape[0]
    ranking = torch.empty(num_keys, 1, dtype=torch.float32, device=mass.device)
    block = 1024
    _mass_ranking[(triton.cdiv(num_keys, block),)](mass, exposure, state, ranking, num_keys, mass.stride(0),
                                                   block=block)
    return ranking


def diversity_ranking(keys: torch.Tensor, frames: torch.Tensor,
                      state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys ``[N, H, D]`` of frames and states ``[N, H]`` -> (ranking ``[H, N]``, diversity ``[]``).

    ``ranking`` is ``state_scores(diversity_scores(keys, frames, state == PATCH)[0], state).t()``,
    contiguous; ``diversity`` the layer statistic (see the module docstring).
    """
    num_keys, num_heads, head_dim = keys.shape
    frequency = _pair_frequencies(keys.device)
    num_parts = triton.cdiv(num_keys, DIVERSITY_CHUNK_KEYS)
    sums = torch.empty(num_heads, num_parts, head_dim, dtype=torch.float32, device=keys.device)
    counts = torch.empty(num_heads, num_parts, dtype=torch.float32, device=keys.device)
    common = dict(chunk=DIVERSITY_CHUNK_KEYS, block_k=BLOCK_KEYS, head_dim=head_dim)
    _diversity_sums[(num_heads, num_parts)](keys, frames, state, frequency, sums, counts, num_keys, num_heads,
                                            num_parts, keys.stride(0), keys.stride(1), **common)
    count = counts.sum(dim=1).clamp(min=1.0)  # [H]
    mean = sums.sum(dim=1) / count.unsqueeze(-1)  # [H, D] as (x, y, rest)
    ranking = torch.empty(num_heads, num_keys, dtype=torch.float32, device=keys.device)
    similarity = torch.empty(num_heads, num_parts, dtype=torch.float32, device=keys.device)
    _diversity_ranking[(num_heads, num_parts)](keys, frames, state, frequency, mean, ranking, similarity,
                                               num_keys, num_heads, num_parts, keys.stride(0), keys.stride(1),
                                               **common)
    return ranking, 1.0 - (similarity.sum(dim=1) / count).mean()
