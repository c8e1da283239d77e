"""Budgeted caches in fixed shapes: the same steps as the host-addressed path, a graph key that stays
equal across steady steps and changes when it must, and device work that reads no host value that
changes under one key (``budgeted_cache.py``, module docstring). The capture itself needs CUDA:
``test/gpu/test_step_graphs_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch
from cache_steps import SPECIALS, Step, kept_tokens, run_step, step_mode, step_tensors

from gct_stream_ros.cache.attention import heads_first, partial_attention
from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.cache.policies import budgeted_cache
from gct_stream_ros.cache.policies.attention_mass import attention_mass, concentration, stand_in_queries
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache
from gct_stream_ros.cache.policies.policy import PRESETS, CachePolicy, policy_preset
from gct_stream_ros.cache.policies.pool_attention import PoolAttention, captured_prefix
from gct_stream_ros.cache.policies.token_pool import EXPIRED_SPECIAL, FREE, PATCH, SPECIAL, TokenPool

LAYERS, HEADS, DIM, PATCHES = 3, 2, 64, 8
TOKENS = SPECIALS + PATCHES
SCALE, WINDOW, MAX_FRAMES = 2, 3, 9
TOKEN_POLICIES = [PRESETS["evict3r"], PRESETS["infinitevggt"],
                  CachePolicy("recency_tokens", granularity="token", timing="after"),
                  CachePolicy("exact_mass", scorer="attention_mass", allocator="variance",
                              granularity="token", timing="after", mass_queries="exact")]


def _budgeted(policy: CachePolicy, fixed_shape: bool, max_frames: int = MAX_FRAMES,
              evict_every: int = 1) -> BudgetedKVCache:
    return BudgetedKVCache(LAYERS, HEADS, DIM, policy, SPECIALS, SCALE, 0, WINDOW, max_frames, budget=0.6,
                           fixed_shape=fixed_shape, evict_every=evict_every)


@pytest.mark.parametrize("evict_every", [1, 3])
@pytest.mark.parametrize("policy", TOKEN_POLICIES, ids=lambda p: p.name)
def test_fixed_shape_steps_keep_and_attend_what_the_host_addressed_steps_do(policy, evict_every):
    host, fixed = (_budgeted(policy, shape, evict_every=evict_every) for shape in (False, True))
    gen = torch.Generator().manual_seed(0)
    kinds = ["store"] * 14 + ["skip", "commit", "store", "rollback", "skip"] + ["store"] * 12
    in_fixed_shapes = []
    for step in [Step("phase1", SCALE)] + [Step(kind) for kind in kinds]:
        tensors = step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM)
        expected = run_step(host, step, tensors)
        outputs = run_step(fixed, step, tensors,
                           after_begin=lambda c: in_fixed_shapes.append(c._fixed is not None))
        for ours, reference in zip(outputs, expected, strict=True):
            # the same keys attended in two parts: equal up to the order of the float sums
            torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
        assert [p.length for p in fixed._pools] == [p.length for p in host._pools]
        assert fixed.stats() == host.stats()
        assert kept_tokens(fixed._pools) == kept_tokens(host._pools)
        for layer, pool in enumerate(fixed._pools):
            state = pool.state[:pool.length]
            specials = (state[:, 0] == SPECIAL) | (state[:, 0] == EXPIRED_SPECIAL)
            assert int((~specials).sum()) == fixed.patch_tokens(layer)
            assert not (state == FREE).any()
    assert fixed.stats().specials_dropped > 0 and fixed.stats().frames_evicted > 0
    # every single-frame STORE or SKIP step, no DEFER step
    assert sum(in_fixed_shapes) == kinds.count("store") + kinds.count("skip")


@pytest.mark.parametrize("policy", ["evict3r", "infinitevggt"])
def test_fixed_shape_steps_in_half_precision_off_cuda_attend_as_the_host_addressed_steps(policy):
    """bf16 storage on the CPU: the prefix attended in two parts merges by an fp32 log-sum-exp."""
    host, fixed = (BudgetedKVCache(LAYERS, HEADS, DIM, policy_preset(policy), SPECIALS, SCALE, 0, WINDOW,
                                   MAX_FRAMES, budget=0.6, fixed_shape=shape, dtype=torch.bfloat16)
                   for shape in (False, True))
    gen = torch.Generator().manual_seed(10)
    in_fixed_shapes = []
    for step in [Step("phase1", SCALE)] + [Step("store")] * 6:
        tensors = step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM, torch.bfloat16)
        expected = run_step(host, step, tensors)
        outputs = run_step(fixed, step, tensors,
                           after_begin=lambda c: in_fixed_shapes.append(c._fixed is not None))
        for ours, reference in zip(outputs, expected, strict=True):
            assert ours.dtype == torch.bfloat16
            torch.testing.assert_close(ours, reference, rtol=2e-2, atol=2e-2)
    assert in_fixed_shapes == [False] + [True] * 6 and fixed.stats() == host.stats()


def test_compile_regions_routes_the_fixed_shape_merge_through_torch_compile_unchanged():
    traced = []

    def recording_backend(graph_module, example_inputs):
        traced.append(graph_module)
        return graph_module.forward

    plain, compiled = (_budgeted(policy_preset("evict3r"), True) for _ in range(2))
    torch._dynamo.reset()
    compiled.compile_regions(backend=recording_backend, dynamic=False)
    gen = torch.Generator().manual_seed(9)
    for step in [Step("phase1", SCALE)] + [Step("store")] * 8:
        tensors = step_tensors(gen, LAYERS, step.num_frames, TOKENS, HEADS, DIM)
        expected = run_step(plain, step, tensors)
        for ours, reference in zip(run_step(compiled, step, tensors), expected, strict=True):
            assert torch.equal(ours, reference), step
    assert traced  # a captured prefix was merged with the rest, through the compiled merge
    assert kept_tokens(compiled._pools) == kept_tokens(plain._pools)


def _store(cache: BudgetedKVCache, gen: torch.Generator, keys: list) -> list[torch.Tensor]:
    return run_step(cache, Step("store"), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM),
                    after_begin=lambda c: keys.append(c.graph_key()))


@pytest.mark.parametrize("policy", ["evict3r", "infinitevggt"])
def test_the_graph_key_stays_equal_across_steady_steps_and_changes_when_it_must(policy, monkeypatch):
    monkeypatch.setattr(budgeted_cache, "REALLOCATE_EVERY", 10**9)  # budgets re-allocated by hand below
    cache = _budgeted(policy_preset(policy), True)
    gen = torch.Generator().manual_seed(1)
    keys = []
    run_step(cache, Step("phase1", SCALE), step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM),
             after_begin=lambda c: keys.append(c.graph_key()))
    for _ in range(MAX_FRAMES + 6):
        _store(cache, gen, keys)
    assert keys[:2] == [None, None]  # phase 1, then a frame that fills the budget without evicting
    # the first single frames fill the budget; then one key while the specials grow (their count is
    # read on the device), another once max_frames recycles a frame at every step
    growing, recycling = keys[2], keys[-1]
    assert None not in keys[2:] and growing != recycling
    first_recycling = keys.index(recycling)
    assert set(keys[2:first_recycling]) == {growing} and set(keys[first_recycling:]) == {recycling}
    assert first_recycling + 1 == MAX_FRAMES  # keys[i] is frame i + 1's: frame max_frames is the first beyond
    assert growing[1:3] == (True, (PATCHES,) * LAYERS) and recycling[2] == (PATCHES + SPECIALS,) * LAYERS
    # from the first recycled frame on, the captured prefixes hold the specials of max_frames frames too
    budgets = cache._budgets
    after = PATCHES if policy == "evict3r" else 0  # evict3r attends before it evicts its frame
    assert growing[3] == tuple(captured_prefix(None, budget + after, PATCHES) for budget in budgets)
    assert recycling[3] == tuple(captured_prefix(None, budget + after + SPECIALS * MAX_FRAMES, PATCHES)
                                 for budget in budgets)
    # a re-allocation: no key while a moved layer's patch count catches up with its budget, then the
    # same key while every captured prefix stays (a budget within a frame of patches of it)...
    # (off CUDA no prefix is captured, so each is the steady count rounded down to a frame of patches)
    up = [PATCHES - 1 - cache._prefix_sizes(layer)[0] % PATCHES for layer in (1, 2)]
    assert min(up) > 0
    cache._budgets = [budgets[0], budgets[1] + up[0], budgets[2] + up[1]]
    for _ in range(3):
        _store(cache, gen, keys)
    assert keys[-3:] == [None, recycling, recycling]
    # ...and another key once a prefix moves (layer 0's budget one below what its prefix holds)
    below = cache._prefix_sizes(0)[0] - recycling[3][0] + 1
    cache._budgets = [budgets[0] - below, budgets[1] + up[0], budgets[2] + up[1]]
    for _ in range(3):
        _store(cache, gen, keys)
    assert keys[-3] is None and keys[-2] == keys[-1] != recycling and keys[-1][:3] == recycling[:3]
    # a SKIP step (nothing kept, nothing evicted) has its own key; a deferred frame has none
    for kind in ("skip", "skip", "commit", "rollback"):
        run_step(cache, Step(kind), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM),
                 after_begin=lambda c: keys.append(c.graph_key()))
    assert keys[-4] == keys[-3] and keys[-4][1:3] == (False, (0,) * LAYERS) and keys[-2:] == [None, None]
    cache.reset()
    run_step(cache, Step("phase1", 1), step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM))
    _store(cache, gen, keys)  # frame 1: a scale frame
    assert keys[-1] is None
    assert _budgeted(policy_preset(policy), False).fixed_shape is False  # on the CPU by default: eager


@pytest.mark.parametrize("policy", ["evict3r", "infinitevggt"])
def test_an_eviction_every_k_frames_cycles_through_k_graph_keys(policy, monkeypatch):
    """Steady STORE steps of a cache that evicts every 3 frames: two that only append (one key: the layers
    evict in step here) and one that frees 3 frames and 3 recycled frames' specials, repeated every 3
    steps; layers out of step (budgets moved by a re-allocation) would make up to 3 keys."""
    monkeypatch.setattr(budgeted_cache, "REALLOCATE_EVERY", 10**9)
    cache = _budgeted(policy_preset(policy), True, evict_every=3)
    gen = torch.Generator().manual_seed(8)
    keys = []
    run_step(cache, Step("phase1", SCALE), step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM))
    for _ in range(MAX_FRAMES + 9):
        _store(cache, gen, keys)
    steady = keys[-9:]
    assert None not in steady and len(set(steady)) == 2 and cache.steady_graph_keys == 3
    assert steady[:3] == steady[3:6] == steady[6:]
    evicting = (3 * (PATCHES + SPECIALS),) * LAYERS
    assert sorted(key[2] for key in steady[:3]) == [(0,) * LAYERS] * 2 + [evicting]


def test_the_graph_key_changes_with_the_storage(monkeypatch):
    """An unbounded pool grows when the step begins (never inside it): the key's storage changes."""
    monkeypatch.setattr(budgeted_cache, "UNBOUNDED_SPECIAL_FRAMES", 2)
    cache = _budgeted(policy_preset("infinitevggt"), True, max_frames=0)
    gen = torch.Generator().manual_seed(2)
    keys, storages = [], []
    run_step(cache, Step("phase1", SCALE), step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM))
    for _ in range(12):
        _store(cache, gen, keys)
        if keys[-1] is not None:
            storages.append(tuple(pool.keys.data_ptr() for pool in cache._pools))
            assert keys[-1][0] == ("budgeted", storages[-1])
    assert len(set(storages)) >= 2 and len(storages) >= 9


class _Replaying:
    """Runs a fixed-shape step's device work with the host values of the first step of its key, as a CUDA
    graph's replay does: any host value that the work read and that changed since would change it."""

    HOST = ("_patches", "_expired", "_budgets", "_special_frames", "_dropping", "_stored_since_allocation",
            "_fixed")

    def __init__(self, cache: BudgetedKVCache):
        self.cache = cache
        self.captured: dict = {}

    def _host(self) -> dict:
        cache = self.cache
        state = {name: getattr(cache, name) for name in self.HOST}
        state = {name: list(value) if isinstance(value, list) else value for name, value in state.items()}
        state["lengths"] = [pool.length for pool in cache._pools]
        state["step"] = cache._steps.current()
        return state

    def _set(self, state: dict) -> None:
        for name in self.HOST:
            setattr(self.cache, name, state[name])
        for pool, length in zip(self.cache._pools, state["lengths"], strict=True):
            pool.length = length
        self.cache._steps._step = state["step"]

    def step(self, tensors: list, mode: StepMode) -> tuple[list[torch.Tensor], bool]:
        """One step; returns its outputs and whether it ran with a captured step's host values."""
        cache = self.cache
        cache.begin_step(1, TOKENS, mode)
        key = cache.graph_key()
        now = self._host()
        replayed = key is not None and key in self.captured
        if key is not None:
            self.captured.setdefault(key, now)
        if replayed:
            self._set(self.captured[key])
        outputs = [cache.attend(layer, q, k, v) for layer, (q, k, v) in enumerate(tensors)]
        self._set(now)
        cache.end_step()
        return outputs, replayed


@pytest.mark.parametrize("evict_every", [1, 2])
@pytest.mark.parametrize("policy", TOKEN_POLICIES, ids=lambda p: p.name)
def test_a_fixed_shape_step_reads_no_host_value_that_changes_under_its_key(policy, evict_every):
    reference, replaying = (_budgeted(policy, True, evict_every=evict_every) for _ in range(2))
    driver = _Replaying(replaying)
    gen = torch.Generator().manual_seed(3)
    phase1 = step_tensors(gen, LAYERS, SCALE, TOKENS, HEADS, DIM)
    run_step(reference, Step("phase1", SCALE), phase1)
    run_step(replaying, Step("phase1", SCALE), phase1)
    replays = 0
    for index in range(MAX_FRAMES + 16):  # re-allocations included (every 8 stored steps)
        tensors = step_tensors(gen, LAYERS, 1, TOKENS, HEADS, DIM)
        kind = "skip" if index % 5 == 4 else "store"
        expected = run_step(reference, Step(kind), tensors)
        outputs, replayed = driver.step(tensors, step_mode(Step(kind)))
        replays += replayed
        for ours, theirs in zip(outputs, expected, strict=True):
            assert torch.equal(ours, theirs)
        for ours, theirs in zip(replaying._pools, reference._pools, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(ours.fields(), theirs.fields(), strict=True))
        assert torch.equal(replaying._statistics, reference._statistics)
    assert replays >= MAX_FRAMES


# -- the device-addressed parts ----------------------------------------------------------------

def test_device_addressed_pool_writes_expiry_and_removal_equal_the_host_addressed_ones():
    gen = torch.Generator().manual_seed(4)
    k, v = (torch.randn(2, TOKENS, HEADS, DIM, generator=gen) for _ in range(2))
    host, device = (TokenPool(40, HEADS, DIM, torch.float32, torch.device("cpu")) for _ in range(2))
    for frame in range(2):
        host.append_frame(k[frame], v[frame], 5 + frame, SPECIALS, PATCH)
        device.write_frame_at(k[frame], v[frame], torch.tensor(device.length, dtype=torch.int32),
                              torch.tensor(5 + frame, dtype=torch.int32), SPECIALS, PATCH, kept=True)
        device.length += TOKENS
    host.expire(5)
    device.expire(torch.tensor(5, dtype=torch.int32), torch.tensor(device.length, dtype=torch.int32))
    slots = torch.stack([torch.randperm(2 * TOKENS, generator=gen)[:9] for _ in range(HEADS)], dim=1)
    slots = slots.sort(dim=0).values  # ascending per head, as ``evicted_slots`` gives them
    host.remove(slots)
    device.remove(slots, torch.tensor([device.length, device.length - 9], dtype=torch.int32))
    assert device.length == 2 * TOKENS  # the host length is the caller's
    device.length = host.length
    for expected, ours in zip(host.fields(), device.fields(), strict=True):
        assert torch.equal(ours[:host.length], expected[:host.length])
    past = device.in_use(torch.tensor(host.length))[host.length:]
    assert past.shape == (40 - host.length, HEADS) and (past == FREE).all()


def test_attention_mass_and_concentration_over_the_first_keys_read_from_the_device():
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(TOKENS, HEADS, DIM, generator=gen)
    keys = torch.randn(50, HEADS, DIM, generator=gen)
    queries, weights = stand_in_queries(q, SPECIALS, "sampled")
    in_use = torch.tensor(31, dtype=torch.int32)
    for chunk_elements in (2 * HEADS * queries.shape[0], 1 << 24):
        mass = attention_mass(queries, weights, keys, chunk_elements, num_keys=in_use)
        # the same sums, up to the float order of a longer row
        torch.testing.assert_close(mass[:31], attention_mass(queries, weights, keys[:31], chunk_elements),
                                   rtol=1e-6, atol=0)
        assert not mass[31:].any()
    torch.testing.assert_close(concentration(mass, in_use), concentration(mass[:31]), rtol=1e-6, atol=0)


def test_pool_attention_over_a_device_range_equals_dense_attention_over_the_prefix():
    gen = torch.Generator().manual_seed(6)
    keys, values = (torch.randn(60, HEADS, DIM, generator=gen) for _ in range(2))
    q = torch.randn(TOKENS, HEADS, DIM, generator=gen)
    attention = PoolAttention()
    for prefix, end in ((0, 37), (24, 37), (24, 60)):
        bounds = torch.tensor([prefix, end], dtype=torch.int32)
        out, lse = attention.attend_range(0, q, keys, values, prefix, bounds)
        whole, whole_lse = partial_attention(*(heads_first(x) for x in (q, keys[:end], values[:end])))
        torch.testing.assert_close(out, whole[0].transpose(0, 1), rtol=1e-5, atol=1e-6)  # tokens first
        # the union's log-sum-exp, that of the attention over all the keys
        torch.testing.assert_close(lse, whole_lse[0, :, :, 0], rtol=1e-6, atol=1e-6)
    out, lse = attention(0, q, keys, values, 37, 10, 100, with_lse=True)  # below a quantum: one part
    whole, whole_lse = partial_attention(heads_first(q), heads_first(keys[:37]), heads_first(values[:37]))
    torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse, whole_lse[0, :, :, 0], rtol=1e-6, atol=1e-6)
