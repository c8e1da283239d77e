"""Test support for the KV caches: random step schedules and a driver for lockstep runs."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gct_stream_ros.cache.base import GlobalKVCache, StepMode
from gct_stream_ros.cache.policies import pool_attention
from gct_stream_ros.cache.policies.token_pool import TokenPool

SPECIALS = 6


@dataclass(frozen=True)
class Step:
    """One action on a cache: a phase-1 or single-frame step, or a reset."""

    kind: str  # "phase1", "store", "skip", "commit", "rollback", "reset"
    num_frames: int = 1


def random_schedule(seed: int, steps: int, max_phase1: int) -> list[Step]:
    """A schedule that starts with phase 1 and mixes every mode, with a rare reset + phase 1."""
    rng = random.Random(seed)
    schedule = [Step("phase1", rng.randint(1, max_phase1))]
    for _ in range(steps):
        if rng.random() < 0.02:
            schedule += [Step("reset"), Step("phase1", rng.randint(1, max_phase1))]
            continue
        schedule.append(Step(rng.choices(["store", "skip", "commit", "rollback"], [5, 2, 2, 2])[0]))
    return schedule


def step_tensors(gen: torch.Generator, num_layers: int, num_frames: int, tokens: int, heads: int,
                 head_dim: int, dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, ...]]:
    """q, k, v ``[S, P, H, D]`` for every layer."""
    shape = (num_frames, tokens, heads, head_dim)
    return [tuple(torch.randn(shape, generator=gen).to(dtype) for _ in range(3)) for _ in range(num_layers)]


def fill_randomly(pool: TokenPool, gen: torch.Generator) -> None:
    """Random values in every field of every slot of ``pool`` (a removal's moves then show)."""
    pool.keys.copy_(torch.randn(pool.keys.shape, generator=gen))
    pool.values.copy_(torch.randn(pool.values.shape, generator=gen))
    pool.frames.copy_(torch.randint(0, 1000, pool.frames.shape, generator=gen))
    pool.state.copy_(torch.randint(0, 5, pool.state.shape, generator=gen))
    pool.mass.copy_(torch.rand(pool.mass.shape, generator=gen))
    pool.exposure.copy_(torch.rand(pool.exposure.shape, generator=gen))


def kept_tokens(pools: list[TokenPool]) -> list[list[tuple[int, int]]]:
    """Per pool (layer) and head, the (frame, state) of every kept token, sorted (slot order aside)."""
    return [sorted(zip(pool.frames[:pool.length, head].tolist(), pool.state[:pool.length, head].tolist()))
            for pool in pools for head in range(pool.frames.shape[1])]


def ascending(slots: torch.Tensor) -> torch.Tensor:
    """Freed slots ``[E, H]`` sorted per head, as ``selection.evicted_slots`` gives them to
    ``TokenPool.remove`` (a head-shared column expanded over the heads stays so)."""
    if slots.stride(1) == 0:
        return slots[:, :1].sort(dim=0).values.expand(slots.shape)
    return slots.sort(dim=0).values


def step_mode(step: Step) -> StepMode:
    modes = {"phase1": StepMode.STORE, "store": StepMode.STORE, "skip": StepMode.SKIP}
    return modes.get(step.kind, StepMode.DEFER)


def run_step(cache: GlobalKVCache, step: Step, tensors: list[tuple[torch.Tensor, ...]],
             after_begin: Callable[[GlobalKVCache], None] | None = None) -> list[torch.Tensor]:
    """Apply ``step`` with the given per-layer q/k/v; return the per-layer outputs (none for a reset).

    ``after_begin(cache)`` runs between ``begin_step`` and the first ``attend``.
    """
    if step.kind == "reset":
        cache.reset()
        return []
    q0 = tensors[0][0]
    cache.begin_step(q0.shape[0], q0.shape[1], step_mode(step))
    if after_begin is not None:
        after_begin(cache)
    outputs = [cache.attend(layer, q, k, v) for layer, (q, k, v) in enumerate(tensors)]
    cache.end_step()
    if step.kind == "commit":
        cache.commit()
    elif step.kind == "rollback":
        cache.rollback()
    return outputs


def count_prefix_captures(monkeypatch) -> list[int]:
    """From now on one entry per capture of a budgeted layer's cuDNN prefix graph (``pool_attention.py``):
    a capture waits for the device once, the one synchronising call a budgeted step may make."""
    captures: list[int] = []

    class CountedCapture(pool_attention.CapturedPartialAttention):
        def __init__(self, *args, **kwargs):
            captures.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pool_attention, "CapturedPartialAttention", CountedCapture)
    return captures
