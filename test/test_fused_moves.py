"""The fused pool writes and removal (``fused_moves``) against ``TokenPool``'s torch ops, on CPU tensors.

Without CUDA, Triton runs the kernels in its interpreter (``conftest.py``), so shapes stay tiny.
"""

from __future__ import annotations

import pytest
import torch
from cache_steps import ascending, fill_randomly

pytest.importorskip("triton")

from gct_stream_ros.cache.policies import fused_moves  # noqa: E402 - after the skip
from gct_stream_ros.cache.policies.token_pool import PATCH, SPECIAL, TokenPool  # noqa: E402

HEADS, DIM, CAPACITY = 4, 8, 48


def random_pool(dtype: torch.dtype, length: int, seed: int) -> TokenPool:
    """A CPU pool (torch ops) whose every slot holds random fields, ``length`` of them in use."""
    pool = TokenPool(CAPACITY, HEADS, DIM, dtype, torch.device("cpu"))
    fill_randomly(pool, torch.Generator().manual_seed(seed))
    pool.length = length
    return pool


def clone(pool: TokenPool) -> tuple[torch.Tensor, ...]:
    return tuple(field.clone() for field in pool.fields())


def assert_prefix_equal(fused: tuple[torch.Tensor, ...], pool: TokenPool) -> None:
    for moved, expected in zip(fused, pool.fields(), strict=True):
        assert torch.equal(moved[:pool.length], expected[:pool.length])


def per_head(*columns: list[int]) -> torch.Tensor:
    return torch.tensor(columns, dtype=torch.int64).t().contiguous()  # [E, H]


def remove_both(pool: TokenPool, fields: tuple[torch.Tensor, ...], marks: torch.Tensor, slots: torch.Tensor,
                on_device: bool = False) -> None:
    """Remove ``slots`` (ascending per head once sorted here) from the torch pool and, fused, from its copy
    ``fields``."""
    slots = ascending(slots)
    length = pool.length
    pool.remove(slots)
    lengths = torch.tensor([length, pool.length], dtype=torch.int32)
    fused_moves.remove(fields, marks, slots, lengths if on_device else length)
    assert not marks.any()  # left all zero for the next removal


SLOTS = {
    # E = 4 of length 20: new length 16, tail [16, 20)
    "holes only below the new length": per_head([0, 3, 7, 15], [1, 2, 4, 5], [15, 14, 13, 12], [9, 0, 6, 11]),
    "evicted tail slots mixed in": per_head([17, 3, 19, 8], [16, 17, 18, 2], [0, 18, 10, 5], [19, 12, 16, 1]),
    "every tail slot evicted": per_head([16, 17, 18, 19], [19, 18, 17, 16], [17, 16, 19, 18],
                                        [18, 19, 16, 17]),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("case", list(SLOTS))
def test_fused_removal_equals_the_torch_removal(case, dtype):
    pool = random_pool(dtype, 20, seed=1)
    fields, marks = clone(pool), torch.zeros(CAPACITY, HEADS, dtype=torch.uint8)
    remove_both(pool, fields, marks, SLOTS[case])
    assert pool.length == 16
    assert_prefix_equal(fields, pool)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_fused_removal_of_head_shared_slots_equals_the_torch_removal(dtype):
    pool = random_pool(dtype, 30, seed=2)
    fields, marks = clone(pool), torch.zeros(CAPACITY, HEADS, dtype=torch.uint8)
    chosen = torch.tensor([28, 4, 11, 25, 0, 29, 17])
    remove_both(pool, fields, marks, chosen.unsqueeze(1).expand(7, HEADS))  # as ``evicted_slots`` gives them
    assert pool.length == 23
    assert_prefix_equal(fields, pool)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_two_fused_removals_with_device_lengths_equal_the_torch_removals(dtype):
    """The fixed-shape form (lengths read from the device, capacity past the length); the second removal
    finds the marks the first one left cleared."""
    gen = torch.Generator().manual_seed(3)
    pool = random_pool(dtype, 40, seed=3)
    fields, marks = clone(pool), torch.zeros(CAPACITY, HEADS, dtype=torch.uint8)
    for count in (9, 12):
        slots = torch.stack([torch.randperm(pool.length, generator=gen)[:count] for _ in range(HEADS)], dim=1)
        remove_both(pool, fields, marks, slots, on_device=True)
        assert_prefix_equal(fields, pool)
    assert pool.length == 40 - 9 - 12


def test_fused_removal_of_more_slots_than_a_pair_block(monkeypatch):
    """Removals larger than ``PAIR_BLOCK`` number the tail block by block."""
    monkeypatch.setattr(fused_moves, "PAIR_BLOCK", 4)
    gen = torch.Generator().manual_seed(4)
    pool = random_pool(torch.float32, 36, seed=4)
    fields, marks = clone(pool), torch.zeros(CAPACITY, HEADS, dtype=torch.uint8)
    slots = torch.stack([torch.randperm(36, generator=gen)[:11] for _ in range(HEADS)], dim=1)
    remove_both(pool, fields, marks, slots)
    assert_prefix_equal(fields, pool)


@pytest.mark.parametrize("on_device", [False, True])
def test_fused_frame_write_equals_the_torch_writes(on_device):
    """``write_run`` of a frame (specials first in the model's order, last in the pool's) at a host or a
    device start and frame index gives what ``stage_frame``'s torch writes give."""
    gen = torch.Generator().manual_seed(5)
    pool = random_pool(torch.bfloat16, 10, seed=5)
    fields = clone(pool)
    # rows strided, as slices of the model's fused projections are
    keys, values = (torch.randn(7, HEADS, 2 * DIM, generator=gen).bfloat16()[..., :DIM] for _ in range(2))
    pool.append_frame(keys, values, frame=12, specials=2, patch_state=PATCH)
    start, frame = (torch.tensor(10, dtype=torch.int32), torch.tensor(12, dtype=torch.int32)) if on_device \
        else (10, 12)
    fused_moves.write_run(fields, keys, values, start, frame, PATCH, leading=2, leading_state=SPECIAL)
    for written, expected in zip(fields, pool.fields(), strict=True):
        assert torch.equal(written, expected)  # the frame's slots, and nothing past them


@pytest.mark.parametrize("on_device", [False, True])
def test_fused_expiry_equals_the_torch_expiry(on_device, monkeypatch):
    """``TokenPool.expire`` of a frame (host or device frame and length): its specials become expired
    specials, its other slots expired patches, only below the length; the rest is untouched."""
    pool = random_pool(torch.float32, 30, seed=6)
    pool.frames[::3] = 7  # the recycled frame in every state, below and past the length
    fields = clone(pool)
    arguments = (7,)
    if on_device:
        arguments = (torch.tensor(7, dtype=torch.int32), torch.tensor(30, dtype=torch.int32))
    pool.expire(*arguments)
    monkeypatch.setattr(fused_moves, "available", lambda keys: True)  # the kernel, interpreted on the CPU
    fused = TokenPool(CAPACITY, HEADS, DIM, torch.float32, torch.device("cpu"))
    for target, source in zip(fused.fields(), fields, strict=True):
        target.copy_(source)
    fused.length = 30
    fused.expire(*arguments)
    assert torch.equal(fused.state, pool.state) and torch.equal(fused.frames, pool.frames)
    assert (pool.state[:30] != fields[3][:30]).any()  # something expired
    assert torch.equal(pool.state[30:], fields[3][30:])  # nothing past the length
