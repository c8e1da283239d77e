"""One validated sizes object: every cache kind refuses the same bad sizes and reads its sizes from it."""

from __future__ import annotations

import pytest

from gct_stream_ros.cache.contiguous_store import ContiguousKVStore
from gct_stream_ros.cache.dense import DenseKVCache
from gct_stream_ros.cache.paged_gather import PagedGatherCache
from gct_stream_ros.cache.paged_store import PagedKVStore
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache
from gct_stream_ros.cache.policies.policy import policy_preset
from gct_stream_ros.cache.sizes import DEFAULT_MAX_FRAMES, CacheSizes
from gct_stream_ros.model.camera_cache import CameraKVCache
from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.stream.config import EngineConfig

HEADS, DIM = 2, 8
BUILDERS = {
    "dense": lambda **sizes: DenseKVCache(**sizes),
    "paged": lambda **sizes: PagedGatherCache(num_heads=HEADS, head_dim=DIM, **sizes),
    "budgeted": lambda **sizes: BudgetedKVCache(num_heads=HEADS, head_dim=DIM,
                                                policy=policy_preset("evict3r"), **sizes),
    "store": lambda **sizes: PagedKVStore(num_heads=HEADS, head_dim=DIM, patches_per_frame=4, **sizes),
    "contiguous_store": lambda **sizes: ContiguousKVStore(num_heads=HEADS, head_dim=DIM, patches_per_frame=4,
                                                          **sizes),
}
GOOD = dict(num_layers=2, num_special_tokens=3, scale_frames=2, sliding_window=4, max_frames=9)


@pytest.mark.parametrize("kind", BUILDERS)
def test_every_cache_reads_its_sizes_from_one_object(kind):
    cache = BUILDERS[kind](**GOOD)
    assert cache.sizes == CacheSizes(**GOOD)
    assert (cache.num_layers, cache.num_special_tokens, cache.scale_frames, cache.sliding_window,
            cache.max_frames) == tuple(GOOD.values())


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize(("bad", "message"), [
    ({"num_layers": 0}, "must be >= 1"), ({"sliding_window": 0}, "must be >= 1"),
    ({"num_special_tokens": 0}, "must be >= 1"), ({"scale_frames": -1}, "scale_frames >= 0"),
    ({"max_frames": 2}, "must be 0 or exceed scale_frames"), ({"max_frames": -1}, "must be 0 or exceed"),
])
def test_every_cache_refuses_the_same_bad_sizes(kind, bad, message):
    with pytest.raises(ValueError, match=message):
        BUILDERS[kind](**{**GOOD, **bad})


def test_the_camera_cache_bounds_frames_by_the_same_rule():
    with pytest.raises(ValueError, match="must be 0 or exceed scale_frames"):
        CameraKVCache(1, 1, scale_frames=3, max_frames=3)


def test_max_frames_has_one_default():
    assert EngineConfig().cache_max_frames == GCTConfig().max_frames == DEFAULT_MAX_FRAMES
    # A reference-equivalent configuration keeps every frame, as the reference does.
    assert GCTConfig.from_reference_kwargs({}).max_frames == 0
