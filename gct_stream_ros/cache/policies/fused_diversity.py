"""InfiniteVGGT's key-diversity ranking as fused CUDA kernels (Triton), for bf16/fp16 keys.

Written with torch ops, the pass over ~36k-70k keys x 16 heads is a dozen kernels, each reading and
writing fp32 tensors of ``[N, H, D]`` (measured on the H200: ~1 ms per layer, most of it in fp32
intermediates and in matrix-vector products that cuBLAS runs on 16 thread blocks), and each op costs
the host its launch. Here:

* ``diversity_ranking``: ``scorers.diversity_scores`` followed by ``token_pool.state_scores``,
  transposed. Pass 1 sums the un-rotated, normalised candidate keys per head, pass 2 scores
  every key against its head's mean and writes the eviction ranking ``[H, N]`` contiguous
  (protected +inf, expired first), so that the per-head top-k reads contiguous rows; two
  one-program kernels combine the partial sums (the mean; then the layer statistic, 1 - mean
  similarity), in a fixed order (no atomics). Both passes are meant to be bound by reading the
  keys once (the code before took 383 + 283 us per layer on the H200 at ~71k keys in use of
  ~108k slots, 16 heads, reading all slots, per head, the even and odd dims with a stride of 2):

  - a tile is ``[8 slots, H, 64]``: every head of a slot, so that keys, frames and states are
    read contiguously (per-head tiles read frames and states at a stride of ``H``); a key is two
    16-byte-vector loads of 32 dims from the same 128-byte line, each split into its even and
    odd dims in registers (``tl.reshape`` + ``tl.split``), not loaded with a stride of 2: four
    ``[8, H, 16]`` fp32 tensors of one layout (rotated pairs x, y; the other dims u, v), so
    that a key's norm and dot product are one reduction each, with no layout conversion;
  - only candidates' keys are loaded (``state == PATCH``; the others' ranking does not depend
    on their key: scale patches and specials are not read), and pass 1 skips the tiles without
    one (the scale frames' patches, first in the pool: 11 % of the tiles at the default budget,
    ~40 % at a quarter of it);
  - given ``num_keys`` on the device (a fixed-shape step, ``budgeted_cache.py``) the slots from
    it on are ``FREE`` (+inf), as ``TokenPool.in_use`` would mark them, and are not read: the
    caller builds no masked state;
  - each pass runs a whole number of waves of programs per SM, each taking every n-th tile (the
    slots in use spread evenly, whatever their count; partial sums ``[programs, H, 64]``); at
    8 warps and 16 heads, no register spills (ptxas for sm_90);
  - each key's angle per pair is computed once per pass, and its cos and sin share one range
    reduction (``_cos_sin``; ``tl.cos``/``tl.sin`` are two libdevice calls that each reduce).
    The rotation is about a third of a pass's instructions (~450 per thread and tile): the
    passes are near both the bandwidth and the instruction-issue bound of the H200.

  Only the first 16 dim pairs go through the rotation (the temporal band is pairs 0..9); the
  kernels are written for the model's head dim, 64. Bytes per pass at 71k slots in use, 16 heads
  (bf16): the candidates' keys and frames, at most 71k x 16 x (128 + 4) = 150 MB (133 MB at
  the default budget, whose 8 scale frames' patches and the specials are not read) and the
  states, 1.1 MB; pass 2 also writes the ranking of every slot, 4 x H x N bytes (6.9 MB at
  108k slots). The code before read every slot's keys in both passes (221 MB at 108k).

Where these run and what tests them: ``fused_ranking.py``.
"""

from __future__ import annotations

import functools

import torch

from gct_stream_ros.cache.policies.fused_moves import TRITON
from gct_stream_ros.cache.policies.temporal_rope import TEMPORAL_PAIRS, rope_frequencies
from gct_stream_ros.cache.policies.token_pool import FREE, PATCH

DIVERSITY_BLOCK_SLOTS = 8
"""Slots per tile of the diversity passes, every head: ``[8, H, 64]`` (16 KiB of bf16 at 16 heads)."""
DIVERSITY_WARPS = 4
"""Warps per program of the diversity passes. Swept on the H200 (108k slots, 71k in use, 16 heads; both
passes and their combining kernels, replayed from a CUDA graph): 8-slot tiles with 4 warps 140 us, with
8 warps 154 us; 16-slot tiles 163 / 184 us; 32-slot tiles 435 / 195 us. The programs per SM below
changed nothing measurable (2/6, 4/4, 8/8, 16/16 within 0.5 us)."""
SUMS_PROGRAMS_PER_SM = 2
RANKING_PROGRAMS_PER_SM = 6
"""Programs of each diversity pass per SM: a multiple of those one SM holds at once, so that they run in
whole waves (ptxas for sm_90, Triton 3.5, 8 warps, 16 heads: pass 1 128 registers per thread, 2 programs
of the SM's 65,536; pass 2 80, 3 programs, or 104 without ``num_keys``, 2)."""
INTERPRETED_PROGRAMS = 3
"""Programs of the diversity passes in Triton's interpreter (CPU tensors): few, each takes several tiles."""
PARTIALS_TILE = 8192
"""Elements of partial sums that the combining kernels read at a time."""
ROTATED_PAIRS = 16
"""Dim pairs that go through the rotation: the temporal band's 10, padded to a power of two."""

if TRITON:
    import triton
    import triton.language as tl

    from gct_stream_ros.cache.policies.fused_ranking import ranked

    _PATCH, _FREE, _PAIRS = tl.constexpr(PATCH), tl.constexpr(FREE), tl.constexpr(ROTATED_PAIRS)

    @triton.jit
    def _cos_sin(angle):
        """cos and sin of fp32 ``angle`` with one shared reduction to ``r`` in [-pi/4, pi/4] (whole quarter
        turns off, pi/2 in three parts) and minimax polynomials of r: within 1e-7 of the exact values up
        to |angle| = 1e4 (1e-6 at 1e5) without fused multiply-adds, as Triton's interpreter runs it; a
        fraction of the instructions of ``tl.cos`` + ``tl.sin``, two libdevice calls that each reduce."""
        quarter = tl.floor(angle * 0.636619772367581343 + 0.5)  # angle * 2/pi, rounded
        r = angle - quarter * 1.5703125
        r = r - quarter * 4.837512969970703125e-4
        r = r - quarter * 7.54978995489188216e-8
        z = r * r
        sin = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r
        cos = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z
        cos = (cos - 0.5) * z + 1.0
        turn = quarter.to(tl.int32) & 3  # the quadrant: (cos, sin) -> (-sin, cos) per quarter turn
        odd = (turn & 1) != 0
        cos_turned = tl.where(odd, sin, cos)
        sin_turned = tl.where(odd, cos, sin)
        cos_turned = tl.where(((turn + 1) & 2) != 0, -cos_turned, cos_turned)
        sin_turned = tl.where((turn & 2) != 0, -sin_turned, sin_turned)
        return cos_turned, sin_turned

    @triton.jit
    def _tile_state(state_ptr, first, in_use, num_heads, state_stride, block: tl.constexpr,
                    heads: tl.constexpr):
        """The states ``[block, heads]`` of slots ``[first, first + block)`` of every head, ``FREE`` from
        ``in_use`` on (and for the heads that pad ``num_heads`` to a power of two)."""
        slot = first + tl.arange(0, block)
        head = tl.arange(0, heads)
        used = (slot < in_use)[:, None] & (head < num_heads)[None, :]
        return tl.load(state_ptr + slot[:, None] * state_stride + head[None, :], mask=used, other=_FREE)

    @triton.jit
    def _key_tile(k_ptr, frame_ptr, frequency_ptr, first, state, k_stride_n, k_stride_h, frame_stride,
                  block: tl.constexpr, heads: tl.constexpr):
        """The keys of slots ``[first, first + block)`` of every head, whose states are ``state``, as
        (x, y, u, v, norm): their first 16 dim pairs (x, y) with the temporal rotation removed and the even
        and odd dims from 32 on (u, v) as stored, each ``[block, heads, 16]`` fp32, and the norms. Only
        candidates (``PATCH``) are read: the others' ranking does not depend on their key (all 0)."""
        slot = first + tl.arange(0, block)
        head = tl.arange(0, heads)
        candidate = state == _PATCH
        # a key's 128 bytes as two contiguous halves (one cache line), even and odd dims split in registers
        rows = k_ptr + slot[:, None] * k_stride_n + head[None, :] * k_stride_h
        half = rows[:, :, None] + tl.arange(0, 2 * _PAIRS)[None, None, :]
        first_half = tl.load(half, mask=candidate[:, :, None], other=0.0)
        second_half = tl.load(half + 2 * _PAIRS, mask=candidate[:, :, None], other=0.0)
        x, y = tl.split(tl.reshape(first_half, [block, heads, _PAIRS, 2]))
        u, v = tl.split(tl.reshape(second_half, [block, heads, _PAIRS, 2]))
        x, y, u, v = x.to(tl.float32), y.to(tl.float32), u.to(tl.float32), v.to(tl.float32)
        norm = tl.maximum(tl.sqrt(tl.sum(x * x + y * y + u * u + v * v, axis=2)), 1e-12)
        frame = tl.load(frame_ptr + slot[:, None] * frame_stride + head[None, :], mask=candidate, other=0)
        # one angle per key and pair, 0 past the temporal band
        frequency = tl.load(frequency_ptr + tl.arange(0, _PAIRS))
        angle = -frame.to(tl.float32)[:, :, None] * frequency[None, None, :]
        cos, sin = _cos_sin(angle)
        return x * cos - y * sin, x * sin + y * cos, u, v, norm

    @triton.jit
    def _slots_in_use(count_ptr, num_slots, on_device: tl.constexpr):
        """The slots in use: read from the device (a fixed-shape step), or all of them."""
        if on_device:
            return tl.minimum(tl.load(count_ptr), num_slots)
        return num_slots

    @triton.jit
    def _diversity_sums(k_ptr, frame_ptr, state_ptr, frequency_ptr, count_ptr, sum_ptr, patches_ptr,
                        num_slots, num_heads, k_stride_n, k_stride_h, frame_stride, state_stride,
                        block: tl.constexpr, heads: tl.constexpr, on_device: tl.constexpr):
        """Per program, the sums of its tiles' normalised candidate keys ``[heads, 64]`` (as x, y, u, v) and
        their count ``[heads]``; a program takes every ``num_programs``-th tile of the slots in use."""
        program, programs = tl.program_id(0), tl.num_programs(0)
        in_use = _slots_in_use(count_ptr, num_slots, on_device)
        # summed over the tile's slots once, at the end (not across warps at every tile)
        total_x = tl.zeros([block, heads, _PAIRS], tl.float32)
        total_y = tl.zeros([block, heads, _PAIRS], tl.float32)
        total_u = tl.zeros([block, heads, _PAIRS], tl.float32)
        total_v = tl.zeros([block, heads, _PAIRS], tl.float32)
        patches = tl.zeros([block, heads], tl.float32)
        first = program * block
        while first < in_use:  # (a while loop: Triton's interpreter takes only plain ints as range bounds)
            state = _tile_state(state_ptr, first, in_use, num_heads, state_stride, block, heads)
            candidate = tl.where(state == _PATCH, 1.0, 0.0)
            if tl.max(tl.max(candidate, axis=1), axis=0) > 0.0:  # tiles of protected keys cost no work
                x, y, u, v, norm = _key_tile(k_ptr, frame_ptr, frequency_ptr, first, state, k_stride_n,
                                             k_stride_h, frame_stride, block, heads)
                weight = (candidate / norm)[:, :, None]
                total_x += x * weight
                total_y += y * weight
                total_u += u * weight
                total_v += v * weight
                patches += candidate
            first += programs * block
        head = tl.arange(0, heads)
        row = sum_ptr + (program * heads + head[:, None]) * 4 * _PAIRS + tl.arange(0, _PAIRS)[None, :]
        tl.store(row, tl.sum(total_x, axis=0))
        tl.store(row + _PAIRS, tl.sum(total_y, axis=0))
        tl.store(row + 2 * _PAIRS, tl.sum(total_u, axis=0))
        tl.store(row + 3 * _PAIRS, tl.sum(total_v, axis=0))
        tl.store(patches_ptr + program * heads + head, tl.sum(patches, axis=0))

    @triton.jit
    def _diversity_mean(sum_ptr, patches_ptr, mean_ptr, patch_count_ptr, num_programs: tl.constexpr,
                        heads: tl.constexpr, head_dim: tl.constexpr, block_parts: tl.constexpr):
        """One head's mean normalised candidate key ``[D]`` and candidate count (at least 1), from the
        programs' sums in a fixed order."""
        head = tl.program_id(0)
        dims = tl.arange(0, head_dim)
        total = tl.zeros([block_parts, head_dim], tl.float32)
        patches = tl.zeros([block_parts], tl.float32)
        for first in range(0, num_programs, block_parts):
            part = first + tl.arange(0, block_parts)
            valid = part < num_programs
            total += tl.load(sum_ptr + (part[:, None] * heads + head) * head_dim + dims[None, :],
                             mask=valid[:, None], other=0.0)
            patches += tl.load(patches_ptr + part * heads + head, mask=valid, other=0.0)
        count = tl.maximum(tl.sum(patches, axis=0), 1.0)
        tl.store(mean_ptr + head * head_dim + dims, tl.sum(total, axis=0) / count)
        tl.store(patch_count_ptr + head, count)

    @triton.jit
    def _diversity_ranking(k_ptr, frame_ptr, state_ptr, frequency_ptr, count_ptr, mean_ptr, ranking_ptr,
                           similarity_ptr, num_slots, num_heads, k_stride_n, k_stride_h, frame_stride,
                           state_stride, block: tl.constexpr, heads: tl.constexpr, on_device: tl.constexpr):
        """The ranking ``[H, N]`` of every slot (+inf past the slots in use, whose keys are not read) and,
        per program, the sum of its candidates' similarities ``[heads]``."""
        program, programs = tl.program_id(0), tl.num_programs(0)
        in_use = _slots_in_use(count_ptr, num_slots, on_device)
        head = tl.arange(0, heads)
        mean = mean_ptr + head[:, None] * 4 * _PAIRS + tl.arange(0, _PAIRS)[None, :]  # as (x, y, u, v)
        mean_x, mean_y = tl.load(mean)[None, :, :], tl.load(mean + _PAIRS)[None, :, :]
        mean_u, mean_v = tl.load(mean + 2 * _PAIRS)[None, :, :], tl.load(mean + 3 * _PAIRS)[None, :, :]
        total = tl.zeros([block, heads], tl.float32)
        first = program * block
        while first < num_slots:
            slot = first + tl.arange(0, block)
            ranking = tl.full([block, heads], float("inf"), tl.float32)
            # (no skip of the tiles without a candidate here, as in the sums: the branch costs this pass
            # a third of its programs per SM, 128 registers per thread instead of 80)
            if first < in_use:
                state = _tile_state(state_ptr, first, in_use, num_heads, state_stride, block, heads)
                x, y, u, v, norm = _key_tile(k_ptr, frame_ptr, frequency_ptr, first, state, k_stride_n,
                                             k_stride_h, frame_stride, block, heads)
                similarity = tl.sum(x * mean_x + y * mean_y + u * mean_u + v * mean_v, axis=2) / norm
                ranking = ranked(-similarity, state)
                total += tl.where(state == _PATCH, similarity, 0.0)
            stored = (slot < num_slots)[:, None] & (head < num_heads)[None, :]
            tl.store(ranking_ptr + head[None, :] * num_slots + slot[:, None], ranking, mask=stored)
            first += programs * block
        tl.store(similarity_ptr + program * heads + head, tl.sum(total, axis=0))

    @triton.jit
    def _diversity_statistic(similarity_ptr, patch_count_ptr, diversity_ptr, num_heads,
                             num_programs: tl.constexpr, heads: tl.constexpr, block_parts: tl.constexpr):
        """The layer's diversity: 1 - the mean over heads of the candidates' mean similarity."""
        head = tl.arange(0, heads)
        total = tl.zeros([block_parts, heads], tl.float32)
        for first in range(0, num_programs, block_parts):
            part = first + tl.arange(0, block_parts)
            total += tl.load(similarity_ptr + part[:, None] * heads + head[None, :],
                             mask=(part < num_programs)[:, None], other=0.0)
        by_head = tl.where(head < num_heads, tl.sum(total, axis=0) / tl.load(patch_count_ptr + head), 0.0)
        tl.store(diversity_ptr, 1.0 - tl.sum(by_head, axis=0) / num_heads)


@functools.cache
def _diversity_programs(device: torch.device) -> tuple[int, int]:
    """Programs of the two diversity passes: a fixed number per SM, each taking every n-th tile of slots,
    so that the work is spread evenly whatever the slots in use, and the partial sums are few."""
    if device.type != "cuda":
        return INTERPRETED_PROGRAMS, INTERPRETED_PROGRAMS
    processors = torch.cuda.get_device_properties(device).multi_processor_count
    return SUMS_PROGRAMS_PER_SM * processors, RANKING_PROGRAMS_PER_SM * processors


@functools.cache
def _pair_frequencies(device: torch.device) -> torch.Tensor:
    """The temporal RoPE frequency of the rotated dim pairs ``[16]`` (0 past the band), built once."""
    frequency = torch.zeros(ROTATED_PAIRS, dtype=torch.float32, device=device)
    frequency[:TEMPORAL_PAIRS] = rope_frequencies(device)
    return frequency


def diversity_ranking(keys: torch.Tensor, frames: torch.Tensor, state: torch.Tensor,
                      num_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys ``[N, H, D]`` of frames and states ``[N, H]`` -> (ranking ``[H, N]``, diversity ``[]``).

    ``ranking`` is ``state_scores(diversity_scores(keys, frames, state == PATCH)[0], state).t()``,
    contiguous; ``diversity`` the layer statistic (see the module docstring). ``num_keys`` (a 0-d
    int32 device tensor, a fixed-shape step): only the first slots are in use, the others rank as
    ``FREE`` (+inf), as if ``state`` were ``TokenPool.in_use(num_keys)``, and their keys are not read.
    """
    num_slots, num_heads, head_dim = keys.shape
    heads = triton.next_power_of_2(num_heads)
    sums_programs, ranking_programs = _diversity_programs(keys.device)
    on_device = num_keys is not None
    count = num_keys if on_device else keys  # unread unless on_device
    frequency = _pair_frequencies(keys.device)
    scratch = dict(dtype=torch.float32, device=keys.device)
    sums = torch.empty(sums_programs, heads, head_dim, **scratch)
    patches = torch.empty(sums_programs, heads, **scratch)
    tiles = (keys, frames, state, frequency, count)
    shapes = (num_slots, num_heads, keys.stride(0), keys.stride(1), frames.stride(0), state.stride(0))
    tiling = dict(block=DIVERSITY_BLOCK_SLOTS, heads=heads, on_device=on_device, num_warps=DIVERSITY_WARPS)
    _diversity_sums[(sums_programs,)](*tiles, sums, patches, *shapes, **tiling)
    mean, patch_count = torch.empty(heads, head_dim, **scratch), torch.empty(heads, **scratch)
    _diversity_mean[(heads,)](sums, patches, mean, patch_count, num_programs=sums_programs, heads=heads,
                              head_dim=head_dim, block_parts=PARTIALS_TILE // head_dim)
    ranking = torch.empty(num_heads, num_slots, **scratch)
    similarity = torch.empty(ranking_programs, heads, **scratch)
    _diversity_ranking[(ranking_programs,)](*tiles, mean, ranking, similarity, *shapes, **tiling)
    diversity = torch.empty((), **scratch)
    _diversity_statistic[(1,)](similarity, patch_count, diversity, num_heads, num_programs=ranking_programs,
                               heads=heads, block_parts=PARTIALS_TILE // heads)
    return ranking, diversity
