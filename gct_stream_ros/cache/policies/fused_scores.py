"""The scorers' passes over a layer's cached keys as fused CUDA kernels (Triton), for bf16/fp16 keys.

Written with torch ops, one scoring pass over ~36k-70k keys x 16 heads is a dozen kernels, each
reading and writing fp32 tensors of ``[H, Q, K]`` or ``[N, H, D]`` (measured on the H200:
~1.2 ms per layer for the attention mass, ~1 ms for the key diversity, most of it in fp32
intermediates and in matrix-vector products that cuBLAS runs on 16 thread blocks), and each op
costs the host its launch. Here each pass reads the keys once, as stored, and accumulates in
fp32 in registers:

* ``attention_mass``: the same quantity as ``attention_mass.attention_mass`` (its module
  docstring): pass 1 writes each query's log-sum-exp over chunks of keys (``[H, chunks, Q]``),
  pass 2 combines them and sums ``weight_q x exp(s - lse)`` over queries per key and head
  (``[H, K]``), and a mean over heads ends it.
  Logits are ``tl.dot`` products of the stored keys with the queries (fp32 accumulation).
  Given ``num_keys`` on the device (a fixed-shape step, ``budgeted_cache.py``), both passes run
  over the whole storage and skip the blocks past that count, whose mass is 0.
* ``mass_ranking``: evict3r's ranking, ``state_scores(mass_scores(...))`` of head 0, in one kernel.
* ``diversity_ranking``: ``scorers.diversity_scores`` followed by ``token_pool.state_scores``,
  transposed: pass 1 sums the un-rotated, normalised candidate keys per head (partials per
  chunk), pass 2 scores every key against its head's mean and writes the eviction ranking
  ``[H, N]`` contiguous (protected +inf, expired first), so that the per-head top-k reads
  contiguous rows. Only the first 16 dim pairs go through the rotation (the temporal band is
  pairs 0..9); the kernels are written for the model's head dim, 64.

Used only where ``available(keys)``; every other device/dtype runs the torch code, which the
CPU tests pin. The CUDA tests (``test/gpu/test_cache_policies_gpu.py``) check these kernels
against the torch and float64 reference computations.
"""

from __future__ import annotations

import functools

import torch

from gct_stream_ros.cache.policies.fused_moves import TRITON
from gct_stream_ros.cache.policies.temporal_rope import TEMPORAL_PAIRS, rope_frequencies
from gct_stream_ros.cache.policies.token_pool import EXPIRED_PATCH, EXPIRED_SPECIAL, PATCH

HEAD_DIM = 64
CHUNK_KEYS = 1024
"""Keys per program of the log-sum-exp pass (partials combined afterwards)."""
DIVERSITY_CHUNK_KEYS = 256
"""Keys per program of the diversity passes (more programs: each key costs them more)."""
BLOCK_KEYS = 64
BLOCK_QUERIES = 64
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
    _PAIRS = tl.constexpr(ROTATED_PAIRS)

    @triton.jit
    def _ranked(scores, state):
        """``token_pool.state_scores``: protected never go, expired go first, specials first."""
        ranking = tl.where(state == _PATCH, scores, float("inf"))
        ranking = tl.where(state == _EXPIRED_PATCH, _FP32_LOWEST, ranking)
        return tl.where(state == _EXPIRED_SPECIAL, float("-inf"), ranking)

    @triton.jit
    def _lse_partials(q_ptr, k_ptr, out_ptr, num_queries, num_keys, num_parts, scale,
                      q_stride_n, q_stride_h, k_stride_n, k_stride_h, count_ptr,
                      chunk: tl.constexpr, block_q: tl.constexpr, block_k: tl.constexpr,
                      head_dim: tl.constexpr, on_device: tl.constexpr):
        # the keys in use: on_device, read from the device (the rest of the storage is masked)
        in_use = tl.load(count_ptr) if on_device else num_keys
        head, part, q_block = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        dims = tl.arange(0, head_dim)
        q_index = q_block * block_q + tl.arange(0, block_q)
        q_valid = q_index < num_queries
        q = tl.load(q_ptr + q_index[:, None] * q_stride_n + head * q_stride_h + dims[None, :],
                    mask=q_valid[:, None], other=0.0)
        running_max = tl.full([block_q], float("-inf"), tl.float32)
        running_sum = tl.zeros([block_q], tl.float32)
        # a block runs only when its first key is in use (so its max is finite); a chunk past the keys
        # in use runs none and its log-sum-exp comes out -inf, which the combination ignores
        for offset in range(0, chunk, block_k):
            if part * chunk + offset < in_use:
                k_index = part * chunk + offset + tl.arange(0, block_k)
                k_valid = k_index < in_use
                k = tl.load(k_ptr + k_index[:, None] * k_stride_n + head * k_stride_h + dims[None, :],
                            mask=k_valid[:, None], other=0.0)
                logits = tl.where(k_valid[None, :], tl.dot(q, tl.trans(k)) * scale, float("-inf"))
                new_max = tl.maximum(running_max, tl.max(logits, axis=1))
                running_sum = (running_sum * tl.exp(running_max - new_max)
                               + tl.sum(tl.exp(logits - new_max[:, None]), axis=1))
                running_max = new_max
        tl.store(out_ptr + (head * num_parts + part) * num_queries + q_index,
                 running_max + tl.log(running_sum), mask=q_valid)

    @triton.jit
    def _combined_lse(partials_ptr, head, q_index, q_valid, num_queries, num_parts,
                      parts_block: tl.constexpr):
        """The log-sum-exp ``[block_q]`` of queries ``q_index`` over all keys, from the chunks' partials."""
        parts = tl.arange(0, parts_block)
        partial = tl.load(partials_ptr + (head * num_parts + parts[None, :]) * num_queries + q_index[:, None],
                          mask=q_valid[:, None] & (parts[None, :] < num_parts), other=float("-inf"))
        most = tl.maximum(tl.max(partial, axis=1), -1e30)  # finite for padded queries too
        lse = most + tl.log(tl.sum(tl.exp(partial - most[:, None]), axis=1))
        return tl.where(q_valid, lse, 0.0)  # padded queries: -inf, and exp(s - lse) * 0 would be nan

    @triton.jit
    def _mass(q_ptr, k_ptr, partials_ptr, weight_ptr, mass_ptr, num_keys, num_parts, scale,
              q_stride_n, q_stride_h, k_stride_n, k_stride_h, count_ptr, num_queries: tl.constexpr,
              parts_block: tl.constexpr, block_q: tl.constexpr, block_k: tl.constexpr,
              head_dim: tl.constexpr, on_device: tl.constexpr):
        """Each head's share ``[H, K]``: ``sum_q weight_q exp(s - lse)`` (summed over heads afterwards);
        0 for the keys past those in use (``on_device``: their count read from the device)."""
        k_block, head = tl.program_id(0), tl.program_id(1)
        dims = tl.arange(0, head_dim)
        k_index = k_block * block_k + tl.arange(0, block_k)
        k_stored = k_index < num_keys
        in_use = tl.load(count_ptr) if on_device else num_keys
        k_valid = k_index < in_use
        k = tl.load(k_ptr + k_index[:, None] * k_stride_n + head * k_stride_h + dims[None, :],
                    mask=k_valid[:, None], other=0.0)
        total = tl.zeros([block_k], tl.float32)
        for q_start in range(0, num_queries, block_q):
            if k_block * block_k < in_use:  # a block past the keys in use stays 0
                q_index = q_start + tl.arange(0, block_q)
                q_valid = q_index < num_queries
                q = tl.load(q_ptr + q_index[:, None] * q_stride_n + head * q_stride_h + dims[None, :],
                            mask=q_valid[:, None], other=0.0)
                lse = _combined_lse(partials_ptr, head, q_index, q_valid, num_queries, num_parts, parts_block)
                weight = tl.load(weight_ptr + q_index, mask=q_valid, other=0.0)  # padded queries weigh 0
                logits = tl.dot(q, tl.trans(k)) * scale
                total += tl.sum(tl.exp(logits - lse[:, None]) * weight[:, None], axis=0)
        tl.store(mass_ptr + head * num_keys + k_index, tl.where(k_valid, total, 0.0), mask=k_stored)

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


def attention_mass(queries: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor,
                   num_keys: torch.Tensor | None = None) -> torch.Tensor:
    """``attention_mass.attention_mass`` fused: queries ``[Q, H, D]``, weights ``[Q]``, keys ``[K, H, D]``;
    ``num_keys`` (a 0-d int32 device tensor): only the first keys count, as there."""
    num_queries, num_heads, head_dim = queries.shape
    on_device = num_keys is not None
    count = num_keys if on_device else keys  # unread unless on_device
    num_keys = keys.shape[0]
    queries = queries.to(keys.dtype)
    num_parts = triton.cdiv(num_keys, CHUNK_KEYS)
    partials = torch.empty(num_heads, num_parts, num_queries, dtype=torch.float32, device=keys.device)
    strides = (queries.stride(0), queries.stride(1), keys.stride(0), keys.stride(1))
    scale = head_dim**-0.5
    _lse_partials[(num_heads, num_parts, triton.cdiv(num_queries, BLOCK_QUERIES))](
        queries, keys, partials, num_queries, num_keys, num_parts, scale, *strides, count,
        chunk=CHUNK_KEYS, block_q=BLOCK_QUERIES, block_k=BLOCK_KEYS, head_dim=head_dim, on_device=on_device)
    by_head = torch.empty(num_heads, num_keys, dtype=torch.float32, device=keys.device)
    _mass[(triton.cdiv(num_keys, 2 * BLOCK_KEYS), num_heads)](
        queries, keys, partials, weights.float(), by_head, num_keys, num_parts, scale, *strides, count,
        num_queries=num_queries, parts_block=triton.next_power_of_2(num_parts), block_q=BLOCK_QUERIES,
        block_k=2 * BLOCK_KEYS, head_dim=head_dim, on_device=on_device)
    mass = by_head.mean(dim=0)
    return mass


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
