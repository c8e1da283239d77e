"""The camera head's KV cache: store, skip, defer + commit / rollback, and the optional bound."""

from __future__ import annotations

import functools

import pytest
import torch

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.model.camera_cache import CameraKVCache


def step(cache: CameraKVCache, frame_ids: list[int], mode: StepMode = StepMode.STORE) -> torch.Tensor:
    """Key = value = the frame id; the output of a uniform query is the mean id of the visible frames."""
    kv = torch.tensor(frame_ids, dtype=torch.float32).reshape(-1, 1, 1)  # [S, H=1, D=1]
    cache.begin_step(len(frame_ids), mode)
    out = [cache.attend(i, b, torch.zeros_like(kv), kv, kv) for i in range(cache.num_iterations)
           for b in range(cache.num_blocks)]
    cache.end_step()
    return out[-1].flatten()


@pytest.fixture(params=[False, True], ids=["prefix", "fixed_shape"])
def new_cache(request):
    """Both ways of attending: over the used prefix, and over the whole buffer with a mask (CUDA's)."""
    return functools.partial(CameraKVCache, fixed_shape=request.param)


def test_store_keeps_every_frame_by_default_like_the_reference(new_cache):
    cache = new_cache(num_iterations=2, num_blocks=2)
    assert step(cache, [1, 2]).tolist() == [1.5, 1.5]  # phase 1 attends bidirectionally
    for frame in range(3, 10):
        step(cache, [frame])
    assert cache.frames_cached == cache.frames_stored == 9
    assert step(cache, [10]).item() == pytest.approx(5.5)


def test_skip_attends_with_itself_and_stores_nothing(new_cache):
    cache = new_cache(1, 1)
    step(cache, [2, 4])
    assert step(cache, [9], StepMode.SKIP).item() == pytest.approx(5.0)
    assert cache.frames_cached == cache.frames_stored == 2


def test_defer_rollback_removes_the_frame_and_commit_keeps_it(new_cache):
    cache = new_cache(2, 3)
    step(cache, [2, 4])
    assert step(cache, [9], StepMode.DEFER).item() == pytest.approx(5.0)
    cache.rollback()
    assert cache.frames_cached == cache.frames_stored == 2
    assert step(cache, [6]).item() == pytest.approx(4.0)
    step(cache, [8], StepMode.DEFER)
    cache.commit()
    assert cache.frames_cached == 4
    with pytest.raises(RuntimeError):
        cache.commit()


def test_max_frames_keeps_the_scale_frames_and_the_newest(new_cache):
    cache = new_cache(1, 1, scale_frames=1, max_frames=3)
    step(cache, [1, 2])
    for frame in (3, 4, 5):
        step(cache, [frame])
    assert cache.frames_cached == 3 and cache.frames_stored == 5
    assert step(cache, [6]).item() == pytest.approx((1 + 5 + 6) / 3)


def test_bounded_storage_is_allocated_once_and_stays_put(new_cache):
    cache = new_cache(2, 2, scale_frames=2, max_frames=5)
    step(cache, [1, 2])
    storage = [kv[0].data_ptr() for blocks in cache._buffers for kv in blocks]
    held = cache.nbytes
    for frame in range(3, 40):
        mode = (StepMode.STORE, StepMode.SKIP, StepMode.DEFER)[frame % 3]
        step(cache, [frame], mode)
        if mode is StepMode.DEFER:
            cache.commit() if frame % 2 else cache.rollback()
        assert cache.frames_cached <= 5
    assert [kv[0].data_ptr() for blocks in cache._buffers for kv in blocks] == storage
    assert cache.nbytes == held == 2 * 2 * 2 * 6 * 4  # (iterations x blocks) K and V of 6 frames, fp32
    cache.reset()
    step(cache, [7, 9])
    assert [kv[0].data_ptr() for blocks in cache._buffers for kv in blocks] == storage


def test_unbounded_storage_grows_and_keeps_every_frame(new_cache):
    cache = new_cache(1, 2)
    step(cache, [0, 1])
    for frame in range(2, 150):  # past the first allocation (64 frames) and its doubling
        step(cache, [frame])
    assert cache.frames_cached == 150
    assert step(cache, [150]).item() == pytest.approx(75.0)


def test_a_new_dtype_after_a_reset_gets_new_storage(new_cache):
    cache = new_cache(1, 1)
    step(cache, [1, 2])
    cache.reset()
    kv = torch.tensor([3.0, 5.0], dtype=torch.float64).reshape(-1, 1, 1)
    cache.begin_step(2, StepMode.STORE)
    out = cache.attend(0, 0, torch.zeros_like(kv), kv, kv)
    cache.end_step()
    assert out.dtype == torch.float64 and out.flatten().tolist() == [4.0, 4.0]


def test_fixed_shape_steps_have_one_graph_key_per_buffer_size_and_grow_before_the_step():
    cache = CameraKVCache(1, 2, fixed_shape=True)
    cache.begin_step(2, StepMode.STORE)
    assert cache.graph_key() is None  # the first step allocates the buffers: it runs eagerly
    kv = torch.ones(2, 1, 1)
    for block in range(2):
        cache.attend(0, block, kv, kv, kv)
    cache.end_step()
    keys = []
    for _ in range(2, 70):  # past the first allocation (64 frames)
        cache.begin_step(1, StepMode.STORE)
        keys.append(cache.graph_key())
        held = [kv[0].data_ptr() for blocks in cache._buffers for kv in blocks]
        for block in range(2):
            cache.attend(0, block, kv[:1], kv[:1], kv[:1])
        assert [kv[0].data_ptr() for blocks in cache._buffers for kv in blocks] == held  # no growth inside
        cache.end_step()
    sizes = [key[0][1] for key in keys]
    assert sorted(set(sizes)) == [64, 128] and len(set(keys)) == 2
    assert sizes.index(128) == 64 - 2  # the step that needs the 65th row
    prefix = CameraKVCache(1, 1, fixed_shape=False)
    step(prefix, [1, 2])
    prefix.begin_step(1, StepMode.STORE)
    assert prefix.graph_key() is None


def test_fixed_shapes_attend_as_the_prefix_does_on_random_tokens():
    prefix, fixed = CameraKVCache(2, 1, fixed_shape=False), CameraKVCache(2, 1, fixed_shape=True)
    gen = torch.Generator().manual_seed(3)
    for frames, mode in [(2, StepMode.STORE), (1, StepMode.STORE), (1, StepMode.SKIP), (1, StepMode.STORE)]:
        q, k, v = torch.randn(3, frames, 4, 16, generator=gen).unbind(0)
        outputs = []
        for cache in (prefix, fixed):
            cache.begin_step(frames, mode)
            outputs.append([cache.attend(i, 0, q, k, v) for i in range(2)])
            cache.end_step()
        for ours, reference in zip(outputs[1], outputs[0]):
            torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def visible_means(max_frames: int, scale_frames: int, modes: list[StepMode],
                  outcomes: list[bool]) -> list[float]:
    """What a bounded cache must give for ``modes`` (phase 1 first): the mean id of the frames each step sees,
    from a plain list of the kept frames (``outcomes``: commit or roll back each DEFER)."""
    kept = list(range(1, scale_frames + 1))
    means, pending = [sum(kept) / len(kept)], iter(outcomes)
    for frame, mode in enumerate(modes, start=scale_frames + 1):
        means.append((sum(kept) + frame) / (len(kept) + 1))
        if mode is StepMode.SKIP or (mode is StepMode.DEFER and not next(pending)):
            continue
        kept.append(frame)
        while len(kept) > max_frames:
            kept.pop(scale_frames)
    return means


def test_bounded_cache_past_max_frames_sees_the_frames_a_list_keeps(new_cache):
    """Once the bound drops frames, a new frame takes a dropped frame's row: every mode and order of steps
    still sees the scale frames and the newest others, as a list would keep them."""
    gen = torch.Generator().manual_seed(7)
    modes = [(StepMode.STORE, StepMode.SKIP, StepMode.DEFER)[i] for i in
             torch.multinomial(torch.tensor([0.6, 0.2, 0.2]), 60, replacement=True, generator=gen).tolist()]
    outcomes = torch.rand(60, generator=gen).lt(0.5).tolist()
    cache = new_cache(2, 2, scale_frames=2, max_frames=5)
    means = [step(cache, [1, 2]).tolist()[0]]
    pending = iter(outcomes)
    for frame, mode in enumerate(modes, start=3):
        means.append(step(cache, [frame], mode).item())
        if mode is StepMode.DEFER:
            cache.commit() if next(pending) else cache.rollback()
    assert means == pytest.approx(visible_means(5, 2, modes, outcomes))
    assert cache.frames_cached == 5


def test_steps_past_max_frames_write_no_more_than_their_frame(new_cache):
    """The steady state of an endless stream: no row is copied when the bound drops a frame."""
    from torch.utils._python_dispatch import TorchDispatchMode  # noqa: PLC0415

    class CopyCount(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.copies = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.copy_, torch.ops.aten.clone,
                                       torch.ops.aten.index_select):
                self.copies += 1
            return func(*args, **(kwargs or {}))

    cache = new_cache(2, 2, scale_frames=1, max_frames=3)
    step(cache, [1, 2])
    for frame in range(3, 8):
        step(cache, [frame])
    counter = CopyCount()
    for frame in range(8, 11):
        kv = torch.full((1, 1, 1), float(frame))
        cache.begin_step(1, StepMode.STORE)
        for iteration in range(2):
            for block in range(2):
                cache.attend(iteration, block, kv, kv, kv)
        with counter:  # where the bound applies
            cache.end_step()
    assert counter.copies == 0
    assert cache.frames_cached == 3
    assert step(cache, [11]).item() == pytest.approx((1 + 9 + 10 + 11) / 4)
