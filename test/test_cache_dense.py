"""DenseKVCache: the sliding-window policy, the canonical key order, SKIP/DEFER and stats."""

from __future__ import annotations

import pytest
import torch

from gct_stream_ros.cache import attention
from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.cache.dense import DenseKVCache

SPECIALS, TOKENS, HEADS, HEAD_DIM = 2, 4, 1, 4  # 2 specials + 2 patches per frame


def frame_kv(frame_id: int, num_frames: int = 1) -> torch.Tensor:
    """K (= V) whose channel 0 is ``100 * frame + token``: the id of every key."""
    ids = torch.arange(num_frames)[:, None] * 100 + frame_id * 100 + torch.arange(TOKENS)[None, :]
    kv = torch.zeros(num_frames, TOKENS, HEADS, HEAD_DIM)
    kv[..., 0] = ids[..., None].float()
    return kv


@pytest.fixture
def seen_keys(monkeypatch):
    """Key ids passed to SDPA by each attend call, in order."""
    calls: list[list[int]] = []
    real = attention.F.scaled_dot_product_attention

    def recording(query, key, value, **kwargs):
        calls.append([int(i) for i in key[0, 0, :, 0].tolist()])
        return real(query, key, value, **kwargs)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", recording)
    return calls


def step(cache: DenseKVCache, frame_id: int, mode: StepMode = StepMode.STORE, num_frames: int = 1,
         layers: int = 1) -> torch.Tensor:
    kv = frame_kv(frame_id, num_frames)
    cache.begin_step(num_frames, TOKENS, mode)
    out = [cache.attend(layer, kv, kv, kv) for layer in range(layers)]
    cache.end_step()
    return out[-1]


def ids(frame: int, tokens) -> list[int]:
    return [frame * 100 + t for t in tokens]


PATCHES, SPECIAL = range(SPECIALS, TOKENS), range(SPECIALS)


def make(**kwargs) -> DenseKVCache:
    defaults = dict(num_layers=1, num_special_tokens=SPECIALS, scale_frames=1, sliding_window=2)
    return DenseKVCache(**{**defaults, **kwargs})


def test_phase1_attends_over_its_own_tokens_in_natural_order(seen_keys):
    cache = make()
    step(cache, 0, num_frames=2)
    assert seen_keys[-1] == ids(0, range(TOKENS)) + ids(1, range(TOKENS))
    assert cache.frames_stored == 2


def test_keyframes_see_scale_frames_window_and_every_special_in_canonical_order(seen_keys):
    cache = make()
    step(cache, 0, num_frames=2)
    for frame in (2, 3, 4):
        step(cache, frame)
    # scale frame 0, window = frames 3 and 4 (frame 4 is the current one), specials of all
    assert seen_keys[-1] == (ids(0, PATCHES) + ids(3, PATCHES) + ids(4, PATCHES)
                             + sum((ids(f, SPECIAL) for f in range(5)), []))
    stats = cache.stats()
    assert (stats.frames_stored, stats.frames_evicted) == (5, 2)
    assert stats.tokens_per_layer == [3 * TOKENS + 2 * SPECIALS]
    assert stats.protected_tokens == TOKENS + 4 * SPECIALS


def test_skip_attends_with_its_own_keys_last_and_leaves_the_cache_unchanged(seen_keys):
    cache = make()
    step(cache, 0, num_frames=2)
    step(cache, 2)
    before = cache.stats()
    step(cache, 7, StepMode.SKIP)
    assert seen_keys[-1] == (ids(0, PATCHES) + ids(1, PATCHES) + ids(2, PATCHES) + ids(7, PATCHES)
                             + ids(0, SPECIAL) + ids(1, SPECIAL) + ids(2, SPECIAL) + ids(7, SPECIAL))
    assert cache.stats() == before
    assert cache.frames_stored == 3


def test_defer_sees_one_more_window_frame_and_commit_evicts(seen_keys):
    cache = make()
    step(cache, 0, num_frames=2)
    step(cache, 2)
    step(cache, 3, StepMode.DEFER)
    window = ids(1, PATCHES) + ids(2, PATCHES) + ids(3, PATCHES)
    assert seen_keys[-1][: 4 * (TOKENS - SPECIALS)] == ids(0, PATCHES) + window
    assert cache.stats().frames_evicted == 0
    cache.commit()
    assert cache.stats().frames_evicted == 1
    assert cache.frames_stored == 4
    step(cache, 4)
    assert seen_keys[-1][: 3 * (TOKENS - SPECIALS)] == ids(0, PATCHES) + ids(3, PATCHES) + ids(4, PATCHES)


def test_defer_then_rollback_leaves_no_trace():
    deferred, plain = make(num_layers=2), make(num_layers=2)
    for cache in (deferred, plain):
        step(cache, 0, num_frames=2, layers=2)
        step(cache, 2, layers=2)
    stats_before = deferred.stats()
    step(deferred, 9, StepMode.DEFER, layers=2)
    deferred.rollback()
    assert deferred.stats() == stats_before
    assert torch.equal(step(deferred, 3, layers=2), step(plain, 3, layers=2))
    assert deferred.stats() == plain.stats()


def test_max_frames_drops_the_oldest_non_scale_frame(seen_keys):
    cache = make(max_frames=3)
    step(cache, 0, num_frames=2)
    step(cache, 2)
    step(cache, 3)
    assert seen_keys[-1][-3 * SPECIALS:] == ids(0, SPECIAL) + ids(2, SPECIAL) + ids(3, SPECIAL)
    stats = cache.stats()
    assert stats.tokens_per_layer == [TOKENS + 2 * TOKENS]
    assert stats.specials_dropped == 1
    assert cache.frames_stored == 4


def test_attention_is_softmax_over_the_visible_keys_with_inverse_sqrt_head_dim_scale():
    cache = make()
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, TOKENS, HEADS, HEAD_DIM) for _ in range(3))
    cache.begin_step(2, TOKENS, StepMode.STORE)
    out = cache.attend(0, q, k, v)
    cache.end_step()
    scores = q.flatten(0, 1)[:, 0] @ k.flatten(0, 1)[:, 0].T / HEAD_DIM**0.5
    expected = scores.softmax(-1) @ v.flatten(0, 1)[:, 0]
    torch.testing.assert_close(out.flatten(0, 1)[:, 0], expected)


def test_storage_dtype_and_bytes():
    cache = make(dtype=torch.bfloat16)
    step(cache, 0, num_frames=2)
    stats = cache.stats()
    assert stats.bytes_used == stats.bytes_allocated == 2 * 2 * TOKENS * HEADS * HEAD_DIM * 2
    assert step(cache, 2).dtype == torch.float32


def test_reset_restarts_the_temporal_index():
    cache = make()
    step(cache, 0, num_frames=2)
    cache.reset()
    assert cache.frames_stored == 0
    assert cache.stats().tokens_per_layer == [0]


@pytest.mark.parametrize("misuse", ["phase1_not_empty", "phase1_skip", "size_change", "commit", "rollback",
                                    "begin_while_deferred"])
def test_misuse_raises(misuse):
    cache = make()
    step(cache, 0)
    if misuse == "phase1_not_empty":
        with pytest.raises(ValueError):
            cache.begin_step(2, TOKENS, StepMode.STORE)
    elif misuse == "phase1_skip":
        with pytest.raises(ValueError):
            make().begin_step(2, TOKENS, StepMode.SKIP)
    elif misuse == "size_change":
        with pytest.raises(ValueError, match="reset"):
            cache.begin_step(1, TOKENS + 1, StepMode.STORE)
    elif misuse in ("commit", "rollback"):
        with pytest.raises(RuntimeError):
            getattr(cache, misuse)()
    else:
        step(cache, 1, StepMode.DEFER)
        with pytest.raises(RuntimeError):
            cache.begin_step(1, TOKENS, StepMode.STORE)
