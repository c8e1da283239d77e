"""The fused exact selection (``cache/policies/fused_select.py``), run by Triton's interpreter on CPU tensors.

Its chosen set must be a stable argsort's first ``count`` (ties by the lowest index), written in
index order, rows of several blocks (``BLOCK``) so that ties are counted across blocks.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from gct_stream_ros.cache.policies import fused_moves  # noqa: E402 - after the skip
from gct_stream_ros.cache.policies.fused_select import OFFSETS_CHUNK, smallest  # noqa: E402
from gct_stream_ros.cache.policies.selection import evicted_slots  # noqa: E402

LOWEST = torch.finfo(torch.float32).min  # an expired patch's ranking
BLOCK = 64
SLOTS = 3 * BLOCK


def expected(rows: torch.Tensor, count: int) -> list[list[int]]:
    return [sorted(torch.argsort(row, stable=True)[:count].tolist()) for row in rows]


def chosen_sets(chosen: torch.Tensor) -> list[list[int]]:
    """Each row's chosen indices as written: ``expected`` only if they come in index order, as
    ``TokenPool.remove`` takes them."""
    return [column.tolist() for column in chosen.t()]


def test_random_rows_choose_their_smallest_values():
    rows = torch.randn(2, SLOTS, generator=torch.Generator().manual_seed(0))
    chosen = smallest(rows, 37, block=BLOCK)
    assert chosen.shape == (37, 2) and chosen.dtype == torch.int64
    assert chosen_sets(chosen) == expected(rows, 37)


def test_exact_ties_go_to_the_lowest_indices_across_blocks():
    rows = torch.randint(0, 3, (2, SLOTS), generator=torch.Generator().manual_seed(1)).float()
    rows[0, 1::4] = -0.0  # the same value as 0.0: not chosen before the 0.0 of lower index
    rows[1] = 1.0 + rows[1] * torch.finfo(torch.float32).eps  # keys that differ in the last byte alone
    assert (rows == rows.min(dim=1, keepdim=True).values).sum(dim=1).min() > 40
    assert chosen_sets(smallest(rows, 40, block=BLOCK)) == expected(rows, 40)


def test_values_below_the_threshold_after_more_ties_than_chosen_are_placed_after_the_ties():
    """A block of ties more than ``count`` needs, then blocks with values below them: those are written
    after the ties chosen, not after every tie seen."""
    rows = torch.ones(1, SLOTS)
    rows[0, 2 * BLOCK + 3:2 * BLOCK + 8] = 0.0
    first_ties, below = list(range(5)), list(range(2 * BLOCK + 3, 2 * BLOCK + 8))
    assert chosen_sets(smallest(rows, 10, block=BLOCK)) == expected(rows, 10) == [first_ties + below]


def test_rows_of_more_blocks_than_one_scan_takes_carry_their_counts_across_scans():
    """Blocks of 2 values: 96 per row, over the 64 that ``_offsets`` scans at a time (``OFFSETS_CHUNK``)."""
    rows = torch.randint(0, 4, (1, SLOTS), generator=torch.Generator().manual_seed(5)).float()
    assert SLOTS // 2 > OFFSETS_CHUNK
    # every 0 (in both scans' blocks: the values below carried) and the first of the 1s (the ties of the
    # threshold, all in the first scan's blocks: the second's must count them as already chosen)
    count = int((rows == 0).sum()) + 20
    assert chosen_sets(smallest(rows, count, block=2)) == expected(rows, count)


def special_rows() -> torch.Tensor:
    """Expired specials (-inf), expired patches (lowest), protected slots (+inf), ties and subnormals."""
    rows = torch.randint(-2, 3, (2, SLOTS), generator=torch.Generator().manual_seed(2)).float()
    rows[:, 1::13] = -1e-40
    rows[:, 4::17] = 1e-40
    rows[0, ::7] = float("-inf")
    rows[1, 3::11] = float("-inf")
    rows[:, 2::5] = LOWEST
    rows[:, 40:2 * BLOCK] = float("inf")  # a whole block, as the pool's unused slots
    rows[1, 2 * BLOCK:] = LOWEST  # a whole block of one value below the threshold
    return rows


@pytest.mark.parametrize("count", [1, 20, SLOTS - (2 * BLOCK - 40)])
def test_expired_slots_go_first_and_protected_ones_never(count):
    rows = special_rows()
    chosen = smallest(rows, count, block=BLOCK)
    assert chosen_sets(chosen) == expected(rows, count)
    assert (rows.gather(1, chosen.t()) < float("inf")).all()


def test_rows_of_a_strided_view_are_read_in_place():
    by_slot = torch.randn(SLOTS, 3, generator=torch.Generator().manual_seed(3))  # [N, H]: rows are strided
    assert chosen_sets(smallest(by_slot.t(), 25, block=BLOCK)) == expected(by_slot.t(), 25)


def test_nothing_to_choose_and_bad_requests():
    rows = torch.randn(2, 10)
    assert smallest(rows, 0).shape == (0, 2)
    with pytest.raises(ValueError, match="cannot choose"):
        smallest(rows, 11)
    with pytest.raises(ValueError, match="float32"):
        smallest(rows.double(), 3)


@pytest.mark.parametrize("per_head", [True, False])
@pytest.mark.parametrize("by_head", [True, False], ids=["scores_H_N_t", "scores_N_H"])
def test_evicted_slots_choose_as_torch_topk_does(per_head, by_head, monkeypatch):
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(3, SLOTS, generator=gen).t() if by_head else torch.randn(SLOTS, 3, generator=gen)
    scores[::9] = float("inf")
    frames = torch.zeros(SLOTS, 3, dtype=torch.int32)
    with_topk = evicted_slots(scores, 30, "token", per_head, frames)
    monkeypatch.setattr(fused_moves, "available", lambda tensor: True)  # the CUDA path, interpreted
    fused = evicted_slots(scores, 30, "token", per_head, frames)
    assert fused.shape == with_topk.shape == (30, 3)
    assert chosen_sets(fused) == chosen_sets(with_topk)
    if not per_head:
        assert chosen_sets(fused) == expected(scores[:, :1].t(), 30) * 3
