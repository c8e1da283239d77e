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
* one kernel counts each block's values below the threshold, and one chooses them and the
  ``ties`` values equal to it of lowest index (pass 4 also keeps each block's histogram: a block
  counts the equal values before it), each written at the number of values chosen before it: the
  output is in index order. The removal that follows needs its slots ascending
  (``TokenPool.remove``); sorting ~1k slots x 16 heads with torch took ~30 us on the H200, as
  long as the whole select.

With the zero fill of the histograms, seven launches whatever R and N. The chosen set is
``torch.argsort(row, stable=True)[:count]``'s: deterministic, ties by the lowest index. Nothing
is read back on the host, and the output's shape depends on ``count`` alone, so a CUDA graph
replays it.
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.policies.fused_moves import TRITON

BLOCK = 2048
"""Values per program: ~53 blocks per row of a 108k-slot pool."""
BYTES = 4
BINS = 256

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
    def _histogram(scores_ptr, histograms_ptr, block_counts_ptr, count, length, row_stride, column_stride,
                   num_rows, num_blocks, byte: tl.constexpr, block: tl.constexpr):
        block_index, row = tl.program_id(0), tl.program_id(1)
        prefix, _ = _threshold(histograms_ptr, row, count, num_rows, byte)
        columns = block_index * block + tl.arange(0, block)
        counted = columns < length
        key = _key(tl.load(scores_ptr + row * row_stride + columns * column_stride, mask=counted, other=0.0))
        if byte > 0:
            counted = counted & ((key >> (32 - 8 * byte)) == prefix)
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

    @triton.jit(do_not_specialize=["count", "length"])
    def _count_below(scores_ptr, histograms_ptr, below_ptr, count, length, row_stride, column_stride,
                     num_rows, num_blocks, block: tl.constexpr):
        """How many values of each block are below the threshold (where ``_choose`` places them)."""
        block_index, row = tl.program_id(0), tl.program_id(1)
        threshold, _ = _threshold(histograms_ptr, row, count, num_rows, 4)
        columns = block_index * block + tl.arange(0, block)
        valid = columns < length
        key = _key(tl.load(scores_ptr + row * row_stride + columns * column_stride, mask=valid, other=0.0))
        tl.store(below_ptr + row * num_blocks + block_index, tl.sum((valid & (key < threshold)).to(tl.int32),
                                                                    axis=0))

    @triton.jit(do_not_specialize=["count", "length"])
    def _choose(scores_ptr, histograms_ptr, block_counts_ptr, below_ptr, chosen_ptr, count, length,
                row_stride, column_stride, num_rows, num_blocks, block: tl.constexpr, blocks: tl.constexpr):
        """Every value below the threshold and the ``ties`` equal to it of lowest index, written in index
        order: a value's position is the number chosen before it (earlier blocks', then its block's)."""
        block_index, row = tl.program_id(0), tl.program_id(1)
        threshold, ties = _threshold(histograms_ptr, row, count, num_rows, 4)
        earlier = tl.arange(0, blocks)
        before = earlier < block_index
        ties_before = tl.sum(tl.load(block_counts_ptr + (row * num_blocks + earlier) * 256
                                     + (threshold & 0xFF).to(tl.int32), mask=before, other=0), axis=0)
        below_before = tl.sum(tl.load(below_ptr + row * num_blocks + earlier, mask=before, other=0), axis=0)
        columns = block_index * block + tl.arange(0, block)
        valid = columns < length
        key = _key(tl.load(scores_ptr + row * row_stride + columns * column_stride, mask=valid, other=0.0))
        equal = valid & (key == threshold)
        tie_rank = ties_before + tl.cumsum(equal.to(tl.int32), axis=0) - 1
        chosen = (valid & (key < threshold)) | (equal & (tie_rank < ties))
        position = below_before + tl.minimum(ties_before, ties) + tl.cumsum(chosen.to(tl.int32), axis=0) - 1
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
    # histograms [4, R, 256], the last pass's histograms per block [R, blocks, 256] and the values below
    # the threshold per block [R, blocks]
    sizes = [BYTES * num_rows * BINS, num_rows * num_blocks * BINS, num_rows * num_blocks]
    scratch = torch.zeros(sum(sizes), dtype=torch.int32, device=rows.device)  # the one fill
    histograms, block_counts, below = scratch.split(sizes)
    shape = (count, length, rows.stride(0), rows.stride(1), num_rows, num_blocks)
    grid = (num_blocks, num_rows)
    for byte in range(BYTES):
        _histogram[grid](rows, histograms, block_counts, *shape, byte=byte, block=block)
    _count_below[grid](rows, histograms, below, *shape, block=block)
    _choose[grid](rows, histograms, block_counts, below, chosen, *shape, block=block,
                  blocks=triton.next_power_of_2(num_blocks))
    return chosen
