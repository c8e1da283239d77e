"""The ``count`` lowest values of each row as seven CUDA kernels (Triton): an exact radix select.

``torch.topk`` of ~1k out of ~100k fp32 values runs a dozen small kernels of a multi-block radix
select: 49 us for one row, 68 us for 16 rows on the H200, per layer and step (issue 13). Here,
for the rows ``[R, N]`` of a layer's eviction ranking:

* each value is read as a uint32 key whose unsigned order is the float order (negatives: every
  bit flipped; others, -0.0 included: the sign bit set), so -inf < lowest < ... < +inf and the
  two zeros are one key;
* 4 passes, one kernel each, over every row in blocks of ``block`` values: pass ``p`` histograms
  (256 bins) the ``p``-th byte, from the top, of the keys whose higher bytes equal the prefix
  found so far. Each program first finds that prefix, and how many values are still to choose,
  from the earlier passes' histograms (``_threshold``); a block whose keys of the prefix all fall
  in one bin (most blocks from pass 3 on, and the pool's unused slots, +inf) adds their number to
  it without a histogram. After pass 4 the prefix is the ``count``-th smallest key, the
  threshold, of which ``ties`` values are to be chosen;
* pass 4 also keeps, per block, its histogram (of the keys with the threshold's first three
  bytes) and how many of its keys are below those three bytes. One program per row then finds
  the threshold once and scans the blocks (``_offsets``): the values each block chooses before
  its own (below the threshold, then ties up to ``ties``);
* one kernel chooses every value below the threshold and the ``ties`` equal to it of lowest
  index, each written at the number of values chosen before it: the output is in index order.
  The removal that follows needs its slots ascending (``TokenPool.remove``); sorting ~1k slots x
  16 heads with torch took ~30 us on the H200, as long as the whole select.

  The scan replaced a kernel that read every value again to count those below the threshold,
  with every program of the choice finding the threshold itself and reading the earlier
  blocks' counts: 47.0 -> 41.3 us for 16 rows of 108k slots replayed from a CUDA graph, 24.3 us
  for one row either way (H200, ``benchmarks/README.md``, eighth session).

With the zero fill of the histograms, seven launches whatever R and N. The chosen set is
``torch.argsort(row, stable=True)[:count]``'s: deterministic, ties by the lowest index. Nothing
is read back on the host, and the output's shape depends on ``count`` alone, so a CUDA graph
replays it.
"""

from __future__ import annotations

import torch

from gct_stream_ros.optional_packages import TRITON

BLOCK = 2048
"""Values per program: ~53 blocks per row of a 108k-slot pool."""
BYTES = 4
BINS = 256
OFFSETS_CHUNK = 64
"""Blocks whose histograms ``_offsets`` scans at a time ([64, 256] values: every block of a 108k-slot row
at once, 53 of 2,048)."""
OFFSETS_WARPS = 8

if TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _key(values):
        """fp32 -> uint32 of the same order (-0.0 and +0.0 alike); integer ops alone, so that no flush of
        subnormals to zero can reorder them."""
        bits = values.to(tl.uint32, bitcast=True)
        bits = tl.where(bits == 0x80000000, 0, bits)
        return tl.where((bits >> 31) != 0, bits ^ 0xFFFFFFFF, bits | 0x80000000)

    @triton.jit
    def _threshold(histograms_ptr, row, count, num_rows, passes: tl.constexpr):
        """The first ``passes`` bytes of the row's ``count``-th smallest key, and how many of the values
        with that prefix are among the ``count`` smallest."""
        prefix = tl.zeros([], tl.uint32)
        remaining = tl.zeros([], tl.int32) + count
        bins = tl.arange(0, 256)
        for byte in tl.static_range(passes):
            counts = tl.load(histograms_ptr + (byte * num_rows + row) * 256 + bins)
            through = tl.cumsum(counts, axis=0)
            digit = tl.sum((through < remaining).to(tl.int32), axis=0)  # bins wholly chosen
            remaining -= tl.sum(tl.where(bins < digit, counts, 0), axis=0)
            prefix = (prefix << 8) | digit.to(tl.uint32)
        return prefix, remaining

    @triton.jit(do_not_specialize=["count", "length"])  # count 1 would be a constant; any N one kernel
    def _histogram(scores_ptr, histograms_ptr, block_counts_ptr, below_ptr, count, length, row_stride,
                   column_stride, num_rows, num_blocks, byte: tl.constexpr, block: tl.constexpr):
        block_index, row = tl.program_id(0), tl.program_id(1)
        prefix, _ = _threshold(histograms_ptr, row, count, num_rows, byte)
        columns = block_index * block + tl.arange(0, block)
        valid = columns < length
        key = _key(tl.load(scores_ptr + row * row_stride + columns * column_stride, mask=valid, other=0.0))
        counted = valid
        if byte > 0:
            counted = counted & ((key >> (32 - 8 * byte)) == prefix)
        if byte == 3:  # below the threshold whatever its last byte: the keys below its first three
            tl.store(below_ptr + row * num_blocks + block_index,
                     tl.sum((valid & ((key >> 8) < prefix)).to(tl.int32), axis=0))
        histogram = histograms_ptr + (byte * num_rows + row) * 256
        block_histogram = block_counts_ptr + (row * num_blocks + block_index) * 256
        digit = ((key >> (24 - 8 * byte)) & 0xFF).to(tl.int32)
        # the block's lowest digit (256: no key of the prefix) and its highest: one bin needs no histogram
        first = tl.min(tl.where(counted, digit, 256), axis=0)
        if first == tl.max(tl.where(counted, digit, -1), axis=0):
            number = tl.sum(counted.to(tl.int32), axis=0)
            tl.atomic_add(histogram + first, number, sem="relaxed")
            if byte == 3:
                tl.store(block_histogram + first, number)
        elif first < 256:
            # (Triton 3.5's interpreter returns int64 data typed int32: the round trip makes it int32 there)
            counts = tl.histogram(digit, 256, mask=counted).to(tl.int64).to(tl.int32)
            bins = tl.arange(0, 256)
            tl.atomic_add(histogram + bins, counts, mask=counts > 0, sem="relaxed")
            if byte == 3:
                tl.store(block_histogram + bins, counts)

    @triton.jit
    def _offsets(histograms_ptr, block_counts_ptr, below_ptr, offsets_ptr, thresholds_ptr, count, num_rows,
                 num_blocks, chunk: tl.constexpr):
        """One program per row: its threshold and ties, and per block where ``_choose`` writes its first
        value (the values chosen in the blocks before it) and the values equal to the threshold before
        it, scanned over the blocks in chunks of ``chunk``."""
        row = tl.program_id(0)
        threshold, ties = _threshold(histograms_ptr, row, count, num_rows, 4)
        digit = (threshold & 0xFF).to(tl.int32)
        bins = tl.arange(0, 256)
        below_carry = tl.zeros([], tl.int32)
        ties_carry = tl.zeros([], tl.int32)
        first = 0
        while first < num_blocks:
            block = first + tl.arange(0, chunk)
            valid = block < num_blocks
            # the last byte's histogram of each block [chunk, 256], of the keys with the threshold's prefix
            counts = tl.load(block_counts_ptr + (row * num_blocks + block[:, None]) * 256 + bins[None, :],
                             mask=valid[:, None], other=0)
            below = tl.load(below_ptr + row * num_blocks + block, mask=valid, other=0)
            below += tl.sum(tl.where(bins[None, :] < digit, counts, 0), axis=1)
            equal = tl.sum(tl.where(bins[None, :] == digit, counts, 0), axis=1)
            below_before = below_carry + tl.cumsum(below, axis=0) - below
            ties_before = ties_carry + tl.cumsum(equal, axis=0) - equal
            offset = offsets_ptr + (row * num_blocks + block) * 2
            tl.store(offset, below_before + tl.minimum(ties_before, ties), mask=valid)
            tl.store(offset + 1, ties_before, mask=valid)
            below_carry += tl.sum(below, axis=0)
            ties_carry += tl.sum(equal, axis=0)
            first += chunk
        tl.store(thresholds_ptr + row * 2, threshold.to(tl.int32, bitcast=True))
        tl.store(thresholds_ptr + row * 2 + 1, ties)

    @triton.jit(do_not_specialize=["count", "length"])
    def _choose(scores_ptr, offsets_ptr, thresholds_ptr, chosen_ptr, count, length, row_stride, column_stride,
                num_rows, num_blocks, block: tl.constexpr):
        """Every value below the threshold and the ``ties`` equal to it of lowest index, written in index
        order: a value's position is the number chosen before it (earlier blocks', then its block's)."""
        block_index, row = tl.program_id(0), tl.program_id(1)
        offset = offsets_ptr + (row * num_blocks + block_index) * 2
        start = tl.load(offset)
        if start < count:  # the blocks after the last chosen value read nothing
            ties_before = tl.load(offset + 1)
            threshold = tl.load(thresholds_ptr + row * 2).to(tl.uint32, bitcast=True)
            ties = tl.load(thresholds_ptr + row * 2 + 1)
            columns = block_index * block + tl.arange(0, block)
            valid = columns < length
            key = _key(tl.load(scores_ptr + row * row_stride + columns * column_stride, mask=valid,
                               other=0.0))
            equal = valid & (key == threshold)
            tie_rank = ties_before + tl.cumsum(equal.to(tl.int32), axis=0) - 1
            chosen = (valid & (key < threshold)) | (equal & (tie_rank < ties))
            position = start + tl.cumsum(chosen.to(tl.int32), axis=0) - 1
            tl.store(chosen_ptr + position * num_rows + row, columns.to(tl.int64), mask=chosen)


def smallest(rows: torch.Tensor, count: int, block: int = BLOCK) -> torch.Tensor:
    """Indices ``[count, R]`` (int64, each column ascending) of the ``count`` smallest values of each row of
    the fp32 ``rows`` ``[R, N]`` (any strides), ties by the lowest index; ``block``: values per program."""
    num_rows, length = rows.shape
    if rows.dtype != torch.float32 or not 0 <= count <= length:
        raise ValueError(f"cannot choose {count} of {length} {rows.dtype} values (float32 only)")
    chosen = torch.empty(count, num_rows, dtype=torch.int64, device=rows.device)
    if count == 0:
        return chosen
    num_blocks = triton.cdiv(length, block)
    # histograms [4, R, 256]; per block, the last pass's histogram [R, blocks, 256], the values below the
    # threshold's first three bytes [R, blocks] and (``_offsets``) where it writes [R, blocks, 2]; per row,
    # the threshold and its ties [R, 2]
    sizes = [BYTES * num_rows * BINS, num_rows * num_blocks * BINS, num_rows * num_blocks,
             num_rows * num_blocks * 2, num_rows * 2]
    scratch = torch.zeros(sum(sizes), dtype=torch.int32, device=rows.device)  # the one fill
    histograms, block_counts, below, offsets, thresholds = scratch.split(sizes)
    shape = (count, length, rows.stride(0), rows.stride(1), num_rows, num_blocks)
    grid = (num_blocks, num_rows)
    for byte in range(BYTES):
        _histogram[grid](rows, histograms, block_counts, below, *shape, byte=byte, block=block)
    _offsets[(num_rows,)](histograms, block_counts, below, offsets, thresholds, count, num_rows, num_blocks,
                          chunk=OFFSETS_CHUNK, num_warps=OFFSETS_WARPS)
    _choose[grid](rows, offsets, thresholds, chosen, *shape, block=block)
    return chosen
