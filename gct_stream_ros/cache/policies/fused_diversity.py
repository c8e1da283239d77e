"""InfiniteVGGT's key-diversity ranking as fused CUDA kernels (Triton), for bf16/fp16 keys.

Written with torch ops, the pass over ~36k-70k keys x 16 heads is a dozen kernels, each reading and
writing fp32 tensors of ``[N, H, D]`` (measured on the H200: ~1 ms per layer, most of it in fp32
intermediates and in matrix-vector products that cuBLAS runs on 16 thread blocks), and each op costs
the host its launch. Here:

* ``diversity_ranking``: ``scorers.diversity_scores`` followed by ``token_pool.state_scores``,
  transposed. Pass 1 (``sum_candidates``) sums the un-rotated, normalised keys of the evictable
  patches (``token_pool.evictable_patches``: the candidates and a recycled frame's patches) per
  head, pass 2 scores every key against its head's mean and writes the eviction ranking
  ``[H, N]`` contiguous (protected +inf, expired first), so that the per-head top-k reads
  contiguous rows; one-program kernels combine the partial sums into fp64 sums and counts, in a
  fixed order (no atomics). Given the sums kept across steps (``candidate_sums.py``, the budgeted
  cache's), pass 2 alone runs. The layer statistic, 1 - their mean similarity, needs no
  pass over the scores: a head's evictable patches ``u_i`` have the mean ``m = sum(u_i) / n``, so their
  mean similarity ``sum(u_i . m) / n`` is ``|m|^2``, which pass 2's first program stores from the
  sums it reads anyway (a kernel that summed the programs' similarities cost ~3.6 us a layer).
* ``sum_candidates``: pass 1 over any rows (a range of slots, the cells an eviction frees),
  added to given sums with a sign: the from-scratch sum and every change of
  the kept sums are one kernel.

  Both passes are meant to be bound by reading the keys once (the code before took 383 + 283 us
  per layer on the H200 at ~71k keys in use of ~108k slots, 16 heads, reading all slots, per head,
  the even and odd dims with a stride of 2):

  - a tile is ``[8 slots, H, 64]``: every head of a slot, so that keys, frames and states are
    read contiguously (per-head tiles read frames and states at a stride of ``H``); a key is two
    16-byte-vector loads of 32 dims from the same 128-byte line, each split into its even and
    odd dims in registers (``tl.reshape`` + ``tl.split``), not loaded with a stride of 2: four
    ``[8, H, 16]`` fp32 tensors of one layout (rotated pairs x, y; the other dims u, v), so
    that a key's norm and dot product are one reduction each, with no layout conversion;
  - only evictable patches' keys are loaded (the others' ranking does not depend on their key:
    scale patches and specials are not read), and pass 1 skips the tiles without
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

from gct_stream_ros.cache.policies.temporal_rope import TEMPORAL_PAIRS, rope_frequencies
from gct_stream_ros.cache.policies.token_pool import EXPIRED_PATCH, FREE, PATCH
from gct_stream_ros.optional_packages import TRITON

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
whole waves. Pass 2 at 4 warps and 16 heads (``ncu`` on the H200, Triton 3.5, tenth session): 168
registers per thread, so 3 programs (12 warps) per SM, 18.8 % occupancy; it reads 1.8 TB/s, 37 % of the
peak, so latency rather than bandwidth bounds it. Capping the registers for more programs per SM spills:
``maxnreg`` 128-80 took 72-110 us against 64.5 (``benchmarks/README.md``). Pass 1 held 2 per SM when
measured at 8 warps."""
INTERPRETED_PROGRAMS = 3
"""Programs of the diversity passes in Triton's interpreter (CPU tensors): few, each takes several tiles."""
PARTIALS_TILE = 8192
"""Elements of partial sums that the combining kernels read at a time."""
ROTATED_PAIRS = 16
"""Dim pairs that go through the rotation: the temporal band's 10, padded to a power of two."""

if TRITON:
    import triton
    import triton.language as tl

    from gct_stream_ros.cache.policies.fused_moves import device_or_host
    from gct_stream_ros.cache.policies.fused_ranking import ranked

    _PATCH, _EXPIRED_PATCH = tl.constexpr(PATCH), tl.constexpr(EXPIRED_PATCH)
    _FREE, _PAIRS = tl.constexpr(FREE), tl.constexpr(ROTATED_PAIRS)

    @triton.jit
    def _evictable_patch(state):
        """``token_pool.evictable_patches``: the cells whose keys make the mean."""
        return (state == _PATCH) | (state == _EXPIRED_PATCH)

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
    def _tile_state(state_ptr, slot, head, used, state_stride):
        """The states ``[block, heads]`` of the cells (``slot``, head): ``slot`` ``[block, 1]`` (every head's
        slot is the row's) or ``[block, heads]``; ``FREE`` where not ``used`` (past the rows, or the heads
        that pad ``num_heads`` to a power of two)."""
        return tl.load(state_ptr + slot * state_stride + head[None, :], mask=used, other=_FREE)

    @triton.jit
    def _key_tile(k_ptr, frame_ptr, frequency_ptr, slot, head, state, k_stride_n, k_stride_h, frame_stride,
                  block: tl.constexpr, heads: tl.constexpr):
        """The keys of the cells (``slot``, head) (as ``_tile_state``), whose states are ``state``, as
        (x, y, u, v, norm): their first 16 dim pairs (x, y) with the temporal rotation removed and the even
        and odd dims from 32 on (u, v) as stored, each ``[block, heads, 16]`` fp32, and the norms. Only
        evictable patches are read: the others' ranking and the mean do not depend on their key (all 0)."""
        evictable = _evictable_patch(state)
        # a key's 128 bytes as two contiguous halves (one cache line), even and odd dims split in registers
        rows = k_ptr + slot * k_stride_n + head[None, :] * k_stride_h
        half = rows[:, :, None] + tl.arange(0, 2 * _PAIRS)[None, None, :]
        first_half = tl.load(half, mask=evictable[:, :, None], other=0.0)
        second_half = tl.load(half + 2 * _PAIRS, mask=evictable[:, :, None], other=0.0)
        x, y = tl.split(tl.reshape(first_half, [block, heads, _PAIRS, 2]))
        u, v = tl.split(tl.reshape(second_half, [block, heads, _PAIRS, 2]))
        x, y, u, v = x.to(tl.float32), y.to(tl.float32), u.to(tl.float32), v.to(tl.float32)
        norm = tl.maximum(tl.sqrt(tl.sum(x * x + y * y + u * u + v * v, axis=2)), 1e-12)
        frame = tl.load(frame_ptr + slot * frame_stride + head[None, :], mask=evictable, other=0)
        # one angle per key and pair, 0 past the temporal band
        frequency = tl.load(frequency_ptr + tl.arange(0, _PAIRS))
        angle = -frame.to(tl.float32)[:, :, None] * frequency[None, None, :]
        cos, sin = _cos_sin(angle)
        return x * cos - y * sin, x * sin + y * cos, u, v, norm

    @triton.jit
    def _candidate_sums(k_ptr, frame_ptr, state_ptr, frequency_ptr, cell_ptr, first_ptr, rows_ptr, sum_ptr,
                        patches_ptr, first, rows, limit, num_heads, k_stride_n, k_stride_h, frame_stride,
                        state_stride, cell_stride_e, cell_stride_h, block: tl.constexpr, heads: tl.constexpr,
                        first_on_device: tl.constexpr, rows_on_device: tl.constexpr, listed: tl.constexpr):
        """Per program, the sums of its tiles' normalised keys of evictable patches ``[heads, 64]`` (as x, y,
        u, v) and their count ``[heads]``, over ``rows`` rows from ``first`` (below ``limit``); a program
        takes every ``num_programs``-th tile. A row is a slot, or (``listed``) a row of ``cell_ptr``
        ``[rows, H]`` naming each head's slot."""
        program, programs = tl.program_id(0), tl.num_programs(0)
        start = device_or_host(first, first_ptr, first_on_device)
        stop = tl.minimum(start + device_or_host(rows, rows_ptr, rows_on_device), limit)
        head = tl.arange(0, heads)
        # summed over the tile's rows once, at the end (not across warps at every tile)
        total_x = tl.zeros([block, heads, _PAIRS], tl.float32)
        total_y = tl.zeros([block, heads, _PAIRS], tl.float32)
        total_u = tl.zeros([block, heads, _PAIRS], tl.float32)
        total_v = tl.zeros([block, heads, _PAIRS], tl.float32)
        patches = tl.zeros([block, heads], tl.float32)
        first_row = start + program * block
        while first_row < stop:  # (a while loop: Triton's interpreter takes only plain ints as range bounds)
            row = first_row + tl.arange(0, block)
            used = (row < stop)[:, None] & (head < num_heads)[None, :]
            if listed:
                cell = cell_ptr + row[:, None] * cell_stride_e + head[None, :] * cell_stride_h
                slot = tl.load(cell, mask=used, other=0)
            else:
                slot = row[:, None]
            state = _tile_state(state_ptr, slot, head, used, state_stride)
            evictable = tl.where(_evictable_patch(state), 1.0, 0.0)
            if tl.max(tl.max(evictable, axis=1), axis=0) > 0.0:  # tiles of protected keys cost no work
                x, y, u, v, norm = _key_tile(k_ptr, frame_ptr, frequency_ptr, slot, head, state, k_stride_n,
                                             k_stride_h, frame_stride, block, heads)
                weight = (evictable / norm)[:, :, None]
                total_x += x * weight
                total_y += y * weight
                total_u += u * weight
                total_v += v * weight
                patches += evictable
            first_row += programs * block
        row = sum_ptr + (program * heads + head[:, None]) * 4 * _PAIRS + tl.arange(0, _PAIRS)[None, :]
        tl.store(row, tl.sum(total_x, axis=0))
        tl.store(row + _PAIRS, tl.sum(total_y, axis=0))
        tl.store(row + 2 * _PAIRS, tl.sum(total_u, axis=0))
        tl.store(row + 3 * _PAIRS, tl.sum(total_v, axis=0))
        tl.store(patches_ptr + program * heads + head, tl.sum(patches, axis=0))

    @triton.jit
    def _combine_sums(sum_ptr, patches_ptr, total_ptr, count_ptr, sign, num_programs, heads: tl.constexpr,
                      head_dim: tl.constexpr, block_parts: tl.constexpr):
        """``sign`` x the programs' partial sums of one head, combined in a fixed order, added to its
        candidate sum ``[D]`` and count (fp64)."""
        head = tl.program_id(0)
        dims = tl.arange(0, head_dim)
        total = tl.zeros([block_parts, head_dim], tl.float64)
        patches = tl.zeros([block_parts], tl.float64)
        first = 0
        while first < num_programs:
            part = first + tl.arange(0, block_parts)
            valid = part < num_programs
            total += tl.load(sum_ptr + (part[:, None] * heads + head) * head_dim + dims[None, :],
                             mask=valid[:, None], other=0.0).to(tl.float64)
            patches += tl.load(patches_ptr + part * heads + head, mask=valid, other=0.0).to(tl.float64)
            first += block_parts
        total_sum = tl.load(total_ptr + head * head_dim + dims) + tl.sum(total, axis=0) * sign
        tl.store(total_ptr + head * head_dim + dims, total_sum)
        tl.store(count_ptr + head, tl.load(count_ptr + head) + tl.sum(patches, axis=0) * sign)

    @triton.jit
    def _diversity_ranking(k_ptr, frame_ptr, state_ptr, frequency_ptr, count_ptr, total_ptr, patch_count_ptr,
                           ranking_ptr, diversity_ptr, num_slots, num_heads, k_stride_n, k_stride_h,
                           frame_stride, state_stride, block: tl.constexpr, heads: tl.constexpr,
                           on_device: tl.constexpr):
        """The ranking ``[H, N]`` of every slot (+inf past the slots in use, whose keys are not read) by
        the similarity to the head's mean, the evictable patches' sum over their count (at least 1), and the
        layer statistic (the first program)."""
        program, programs = tl.program_id(0), tl.num_programs(0)
        in_use = tl.minimum(device_or_host(num_slots, count_ptr, on_device), num_slots)
        head = tl.arange(0, heads)
        count = tl.maximum(tl.load(patch_count_ptr + head), 1.0)[:, None]
        mean = total_ptr + head[:, None] * 4 * _PAIRS + tl.arange(0, _PAIRS)[None, :]  # as (x, y, u, v)
        mean_x, mean_y = tl.load(mean) / count, tl.load(mean + _PAIRS) / count
        mean_u, mean_v = tl.load(mean + 2 * _PAIRS) / count, tl.load(mean + 3 * _PAIRS) / count
        if program == 0:  # each head's mean similarity |m|^2 (the module docstring)
            square = tl.sum(mean_x * mean_x + mean_y * mean_y + mean_u * mean_u + mean_v * mean_v, axis=1)
            similarity = tl.sum(tl.where(head < num_heads, square, 0.0), axis=0) / num_heads
            tl.store(diversity_ptr, (1.0 - similarity).to(tl.float32))
        mean_x, mean_y = mean_x.to(tl.float32)[None, :, :], mean_y.to(tl.float32)[None, :, :]
        mean_u, mean_v = mean_u.to(tl.float32)[None, :, :], mean_v.to(tl.float32)[None, :, :]
        first = program * block
        while first < num_slots:
            slot = first + tl.arange(0, block)
            ranking = tl.full([block, heads], float("inf"), tl.float32)
            # (no skip of the tiles without a candidate here, as in the sums: the branch costs this pass
            # a third of its programs per SM, 128 registers per thread instead of 80)
            if first < in_use:
                used = (slot < in_use)[:, None] & (head < num_heads)[None, :]
                state = _tile_state(state_ptr, slot[:, None], head, used, state_stride)
                x, y, u, v, norm = _key_tile(k_ptr, frame_ptr, frequency_ptr, slot[:, None], head, state,
                                             k_stride_n, k_stride_h, frame_stride, block, heads)
                similarity = tl.sum(x * mean_x + y * mean_y + u * mean_u + v * mean_v, axis=2) / norm
                ranking = ranked(-similarity, state)
            stored = (slot < num_slots)[:, None] & (head < num_heads)[None, :]
            tl.store(ranking_ptr + head[None, :] * num_slots + slot[:, None], ranking, mask=stored)
            first += programs * block


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


def candidate_totals(num_heads: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed (sums ``[heads, 64]``, counts ``[heads]``) fp64 for ``sum_candidates``: ``heads`` is
    ``num_heads`` padded to a power of two, the sums' dims in the kernels' order (x, y, u, v)."""
    heads = triton.next_power_of_2(num_heads)
    return (torch.zeros(heads, 4 * ROTATED_PAIRS, dtype=torch.float64, device=device),
            torch.zeros(heads, dtype=torch.float64, device=device))


def sum_candidates(keys: torch.Tensor, frames: torch.Tensor, state: torch.Tensor, sums: torch.Tensor,
                   counts: torch.Tensor, first: int | torch.Tensor, rows: int | torch.Tensor,
                   cells: torch.Tensor | None = None, sign: float = 1.0) -> None:
    """Add ``sign`` x the normalised, un-rotated keys of the evictable patches (``state`` ``PATCH`` or
    ``EXPIRED_PATCH``) among ``rows`` rows from ``first`` to ``sums`` and their number to ``counts``
    (``candidate_totals``).

    A row is a slot of ``keys`` ``[N, H, D]``, ``frames`` and ``state`` ``[N, H]``, or, given ``cells``
    ``[E, H]``, a row of it naming each head's slot. ``first`` and ``rows`` are host ints or 0-d int
    device tensors (a fixed-shape step's). Programs are as few as ``rows`` needs where the host knows it.
    """
    num_slots, num_heads, head_dim = keys.shape
    heads = triton.next_power_of_2(num_heads)
    limit = num_slots if cells is None else cells.shape[0]
    known_rows = limit if isinstance(rows, torch.Tensor) else min(rows, limit)
    tiles = triton.cdiv(known_rows, DIVERSITY_BLOCK_SLOTS)
    programs = max(1, min(_diversity_programs(keys.device)[0], tiles))
    scratch = dict(dtype=torch.float32, device=keys.device)
    partial_sums = torch.empty(programs, heads, head_dim, **scratch)
    partial_counts = torch.empty(programs, heads, **scratch)
    numbers = (first, rows)
    on_device = [isinstance(number, torch.Tensor) for number in numbers]
    _candidate_sums[(programs,)](
        keys, frames, state, _pair_frequencies(keys.device), keys if cells is None else cells,
        *(number if device else keys for number, device in zip(numbers, on_device)),  # read if on device
        partial_sums, partial_counts,
        *(0 if device else number for number, device in zip(numbers, on_device)),
        limit, num_heads, keys.stride(0), keys.stride(1), frames.stride(0), state.stride(0),
        *((0, 0) if cells is None else cells.stride()), block=DIVERSITY_BLOCK_SLOTS, heads=heads,
        first_on_device=on_device[0], rows_on_device=on_device[1], listed=cells is not None,
        num_warps=DIVERSITY_WARPS)
    _combine_sums[(heads,)](partial_sums, partial_counts, sums, counts, sign, programs, heads=heads,
                            head_dim=head_dim, block_parts=PARTIALS_TILE // head_dim)


def diversity_ranking(keys: torch.Tensor, frames: torch.Tensor, state: torch.Tensor,
                      num_keys: torch.Tensor | None = None,
                      totals: tuple[torch.Tensor, torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys ``[N, H, D]`` of frames and states ``[N, H]`` -> (ranking ``[H, N]``, diversity ``[]``).

    ``ranking`` is ``state_scores(diversity_scores(keys, frames, evictable_patches(state))[0], state).t()``,
    contiguous; ``diversity`` the layer statistic (see the module docstring). ``num_keys`` (a 0-d
    int32 device tensor, a fixed-shape step): only the first slots are in use, the others rank as
    ``FREE`` (+inf), as if ``state`` were ``TokenPool.in_use(num_keys)``, and their keys are not read.
    ``totals``: the evictable patches' sums and counts (``candidate_totals``) of the slots in use, where kept
    across steps (``candidate_sums.py``): pass 1 is not run.
    """
    num_slots, num_heads, head_dim = keys.shape
    heads = triton.next_power_of_2(num_heads)
    on_device = num_keys is not None
    if totals is None:
        totals = candidate_totals(num_heads, keys.device)
        sum_candidates(keys, frames, state, *totals, 0, num_keys if on_device else num_slots)
    scratch = dict(dtype=torch.float32, device=keys.device)
    ranking_programs = _diversity_programs(keys.device)[1]
    ranking = torch.empty(num_heads, num_slots, **scratch)
    diversity = torch.empty((), **scratch)
    _diversity_ranking[(ranking_programs,)](
        keys, frames, state, _pair_frequencies(keys.device), num_keys if on_device else keys, *totals,
        ranking, diversity, num_slots, num_heads, keys.stride(0), keys.stride(1), frames.stride(0),
        state.stride(0), block=DIVERSITY_BLOCK_SLOTS, heads=heads, on_device=on_device,
        num_warps=DIVERSITY_WARPS)
    return ranking, diversity
