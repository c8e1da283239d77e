"""Steps replayable from CUDA graphs: the fixed-shape cache paths equal the default ones, and the
model asks for a graph exactly for the steps whose device work repeats (``model/step_graphs.py``).

The capture itself needs CUDA: ``test/gpu/test_step_graphs_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.cache.contiguous_cache import ContiguousKVCache
from gct_stream_ros.cache.policies import budgeted_cache
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache
from gct_stream_ros.cache.policies.policy import policy_preset
from gct_stream_ros.model.camera_cache import CameraKVCache
from gct_stream_ros.model.network import StepOutput
from gct_stream_ros.model.step_graphs import DEFAULT_MAX_GRAPHS, StepGraphs, _CapturedStep


def _fixed_shape_caches(model) -> None:
    """The caches in the form the CUDA path uses: storage order, device-indexed writes, masks."""
    c = model.config
    model.cache = ContiguousKVCache(c.depth, c.num_heads, c.head_dim, c.num_special_tokens, c.scale_frames,
                                    c.sliding_window, canonical_order=False)
    model.camera_cache = CameraKVCache(c.camera_iterations, c.camera_depth, c.scale_frames, fixed_shape=True)


def _stream(model, images) -> list:
    """Phase 1, then keyframes past the window, a skipped frame, deferred frames kept and dropped."""
    outputs = [model.step(images[:2])]
    modes = [StepMode.STORE, StepMode.STORE, StepMode.SKIP, StepMode.DEFER, StepMode.STORE, StepMode.DEFER,
             StepMode.STORE, StepMode.STORE]
    for index, mode in enumerate(modes, start=2):
        outputs.append(model.step(images[index:index + 1], mode))
        if mode is StepMode.DEFER:
            model.commit() if index % 2 else model.rollback()
    return outputs


def test_fixed_shape_caches_give_the_default_caches_outputs(tiny_model, frames):
    images = frames(10)
    default, fixed = tiny_model(), tiny_model()
    _fixed_shape_caches(fixed)
    for a, b in zip(_stream(default, images), _stream(fixed, images), strict=True):
        for name in ("pose_enc", "depth", "depth_conf", "pose_enc_list"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-4, atol=1e-5)
    assert fixed.frames_stored == default.frames_stored


class RecordingGraphs(StepGraphs):
    """Records the keys the model asks for and runs every step eagerly (no CUDA here)."""

    def __init__(self):
        super().__init__()
        self.keys = []

    def run(self, key, images, step, storage=None):
        self.keys.append(key)
        self.storage = storage
        return step(images)


class KeyedCache(ContiguousKVCache):
    """Reports a key on the CPU too: what the contiguous cache reports on CUDA."""

    def graph_key(self):
        store = self.store
        if not self._in_place(self._steps.current()[0]):
            return None
        _, split, stop = store.visible_range()
        return ("cache", stop - split if store.patch_stream_full else None)  # storage: "cache"


def test_the_model_asks_for_a_graph_only_for_steps_whose_device_work_repeats(tiny_model, frames):
    model = tiny_model()
    _fixed_shape_caches(model)
    c = model.config
    model.cache = KeyedCache(c.depth, c.num_heads, c.head_dim, c.num_special_tokens, c.scale_frames,
                             c.sliding_window, canonical_order=False)
    graphs = RecordingGraphs()
    model.replay_steps(graphs)
    images = frames(8)
    model.step(images[:2])  # phase 1: several frames
    assert graphs.keys == []
    for index in range(2, 8):
        model.step(images[index:index + 1], StepMode.SKIP if index == 6 else StepMode.STORE)
    shape, camera = (1, 3, 42, 56), graphs.keys[0][2]
    assert camera[0][:2] == ("camera", 64) and graphs.storage == ("cache", camera[0])
    patches = model.cache.store.patches_per_frame
    full = (c.scale_frames + c.sliding_window) * patches
    # the window (2 frames) fills at the second single frame: one key while filling, then one per key count
    assert graphs.keys == [(shape, ("cache", None), camera), (shape, ("cache", full), camera),
                           (shape, ("cache", full), camera), (shape, ("cache", full), camera),
                           (shape, ("cache", full + patches), camera), (shape, ("cache", full), camera)]
    model.reset()
    model.step(images[:1])  # a one-frame phase 1 sits at position 0: the special tokens' first variant
    model.step(images[1:2], num_scale_frames=3)  # a scale frame by position: the scale token's first variant
    assert len(graphs.keys) == 6


@pytest.mark.parametrize("policy", ["evict3r", "infinitevggt"])
def test_a_budgeted_model_asks_for_one_graph_per_steady_key_and_keeps_its_outputs(tiny_model, frames, policy,
                                                                                  monkeypatch):
    monkeypatch.setattr(budgeted_cache, "REALLOCATE_EVERY", 10**9)  # keys across re-allocations: cache tests
    images = frames(12)
    outputs, keys = {}, {}
    for fixed in (False, True):
        model = tiny_model()
        _fixed_shape_caches(model)
        c = model.config
        model.cache = BudgetedKVCache(c.depth, c.num_heads, c.head_dim, policy_preset(policy),
                                      c.num_special_tokens, c.scale_frames, sliding_window=c.sliding_window,
                                      max_frames=6, budget=0.75, fixed_shape=fixed, evict_every=1)
        graphs = RecordingGraphs()
        model.replay_steps(graphs)
        outputs[fixed] = [model.step(images[:2])] + [
            model.step(images[i:i + 1], StepMode.SKIP if i == 8 else StepMode.STORE) for i in range(2, 12)]
        keys[fixed] = graphs.keys
    for a, b in zip(outputs[False], outputs[True], strict=True):
        for name in ("pose_enc", "depth", "depth_conf", "pose_enc_list"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-4, atol=1e-5)
    assert keys[False] == []  # the host-addressed steps are never replayed
    # frame 2 fills the budget (no key); frames 3-5 while the specials grow, then recycling a frame each,
    # a skipped frame between
    growing, recycling, skipped = keys[True][0], keys[True][-1], keys[True][5]
    assert keys[True] == [growing] * 3 + [recycling] * 2 + [skipped] + [recycling] * 3
    assert len({growing, recycling, skipped}) == 3
    assert graphs.storage[0][0] == "budgeted"


@pytest.mark.parametrize("evict_every", [1, 3])
def test_the_model_keeps_a_step_graph_more_per_phase_of_the_caches_eviction(tiny_model, evict_every):
    model = tiny_model()
    c = model.config
    model.use_cache(BudgetedKVCache(c.depth, c.num_heads, c.head_dim, policy_preset("infinitevggt"),
                                    c.num_special_tokens, c.scale_frames, sliding_window=c.sliding_window,
                                    evict_every=evict_every))
    model.replay_steps()
    assert model.step_graphs.max_graphs == DEFAULT_MAX_GRAPHS + evict_every - 1


class FakeGraph:
    """Stands in for a captured CUDA graph: replaying it runs the captured step again."""

    def __init__(self, step, images):
        self.step, self.images = step, images

    def replay(self):
        self.output.depth.copy_(self.step(self.images).depth)


def test_a_key_runs_eagerly_then_is_captured_then_replayed_and_stale_graphs_go(monkeypatch):
    graphs = StepGraphs(max_graphs=2)
    captured_keys = []

    def capture(images, step):
        static = images.clone()
        graph = FakeGraph(step, static)
        graph.output = step(static)
        captured_keys.append(float(images[0]))
        return _CapturedStep(graph, static, graph.output)

    monkeypatch.setattr(graphs, "_capture", capture)
    calls = []

    def step(images):
        calls.append(float(images[0]))
        return StepOutput(pose_enc=torch.zeros(1, 9), depth=images * 2, depth_conf=torch.ones(1))

    outputs = [graphs.run("a", torch.tensor([float(i)]), step, storage="s1") for i in range(4)]
    assert [float(o.depth[0]) for o in outputs] == [0.0, 2.0, 4.0, 6.0]  # each step's own input
    assert captured_keys == [1.0] and graphs.captures == 1 and graphs.replays == 3
    assert outputs[2].depth is not outputs[3].depth  # outputs are copies, not the graph's buffers
    graphs.run("b", torch.tensor([9.0]), step, storage="s1")
    graphs.run("b", torch.tensor([9.0]), step, storage="s1")
    graphs.run("c", torch.tensor([9.0]), step, storage="s1")
    graphs.run("c", torch.tensor([9.0]), step, storage="s1")
    assert list(graphs._graphs) == ["b", "c"]  # at most max_graphs, the least recently used left
    graphs.run("d", torch.tensor([1.0]), step, storage="s2")  # new storage: the old graphs go
    assert not graphs._graphs and graphs.captures == 3


def test_graph_limits_are_checked():
    with pytest.raises(ValueError, match="max_graphs"):
        StepGraphs(max_graphs=0)


def test_constants_of_an_image_size_are_made_once_and_follow_the_weights(tiny_model):
    """The DINO position-embedding resize and the DPT position embeddings are not redone per step
    (a CUDA graph of the step would otherwise recompute them every frame), but follow new weights."""
    model = tiny_model()
    dino = model.aggregator.patch_embed
    resized = dino.position_embedding(3, 4)
    assert dino.position_embedding(3, 4) is resized
    with torch.no_grad():
        dino.pos_embed.add_(1.0)
    again = dino.position_embedding(3, 4)
    assert again is not resized
    torch.testing.assert_close(again[:, 0], resized[:, 0] + 1.0)
    head = model.depth_head
    embeddings = head.position_embeddings((42, 56), torch.device("cpu"))
    assert head.position_embeddings((42, 56), torch.device("cpu")) is embeddings
    assert [tuple(e.shape) for e in embeddings][-1] == (head.scratch.output_conv1.out_channels, 42, 56)


def test_a_key_whose_capture_fails_runs_eagerly_from_then_on(monkeypatch, caplog):
    graphs = StepGraphs()
    attempts = []

    def failing_capture(images, step):
        attempts.append("key")
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "_capture", failing_capture)
    calls = []
    step = calls.append
    with caplog.at_level("WARNING"):
        for _ in range(4):
            graphs.run("key", torch.zeros(1), step)
    assert len(calls) == 4 and attempts == ["key"] and graphs.captures == graphs.replays == 0
    assert "running it eagerly" in caplog.text and caplog.text.count("cannot capture") == 1
