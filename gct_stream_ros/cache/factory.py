"""Build the global-attention KV cache for a session: policy, backend, sizes.

Backends (``backend=``):

* ``"auto"``: FlashInfer (FA2) when the device is CUDA, ``flashinfer`` is importable and the
  dtype is bf16/fp16 (the reference's fast path); otherwise ``paged_gather``, which runs
  anywhere and equals the dense cache bit for bit in fp32 while keeping its pools
  pre-allocated (constant memory).
* ``"dense"``: the per-frame dense cache (the yardstick of the parity tests).
* ``"paged_gather"``: paged store + gather + SDPA.
* ``"flashinfer"`` / ``"flashinfer_fa3"``: paged store + FlashInfer, FA2 or FA3 kernels.

Only the ``sliding_window`` policy runs on these backends. The other policies (``evict3r``,
``infinitevggt`` or any ``CachePolicy`` composition) keep per-layer token sets of different
sizes and run on ``BudgetedKVCache``, on the given device; asking them for a FlashInfer backend
is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from gct_stream_ros.cache.base import GlobalKVCache
from gct_stream_ros.cache.dense import DenseKVCache
from gct_stream_ros.cache.paged_flashinfer import KERNEL_DTYPES, FlashInferCache, flashinfer_available
from gct_stream_ros.cache.paged_gather import PagedGatherCache
from gct_stream_ros.cache.policies.budget import DEFAULT_BUDGET
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache
from gct_stream_ros.cache.policies.policy import CachePolicy, policy_preset
from gct_stream_ros.cache.sizes import DEFAULT_MAX_FRAMES

BACKENDS = ("auto", "dense", "paged_gather", "flashinfer", "flashinfer_fa3")


class EngineCacheFields(Protocol):
    """The cache fields of ``stream.config.EngineConfig`` (the cache package cannot import it)."""

    num_scale_frames: int
    cache_policy: str
    cache_sliding_window: int
    cache_budget: float
    cache_budget_tokens: int
    cache_max_frames: int


@dataclass(frozen=True)
class CacheSettings:
    """What a cache needs from the session settings (defaults = ``EngineConfig``'s)."""

    policy: str | CachePolicy = "sliding_window"
    scale_frames: int = 8
    sliding_window: int = 64
    budget: float = DEFAULT_BUDGET
    budget_tokens: int = 0
    max_frames: int = DEFAULT_MAX_FRAMES
    num_special_tokens: int = 6

    @classmethod
    def from_config(cls, config: EngineCacheFields) -> CacheSettings:
        return cls(policy=config.cache_policy, scale_frames=config.num_scale_frames,
                   sliding_window=config.cache_sliding_window, budget=config.cache_budget,
                   budget_tokens=config.cache_budget_tokens,
                   max_frames=config.cache_max_frames)


def build_cache(settings: CacheSettings | EngineCacheFields, num_layers: int, num_heads: int, head_dim: int,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                backend: str = "auto") -> GlobalKVCache:
    """The cache for ``settings`` (a ``CacheSettings`` or an ``EngineConfig``); see the module docstring."""
    if not isinstance(settings, CacheSettings):
        settings = CacheSettings.from_config(settings)
    if backend not in BACKENDS:
        raise ValueError(f"cache backend {backend!r} is not one of {', '.join(BACKENDS)}")
    policy = settings.policy if isinstance(settings.policy, CachePolicy) else policy_preset(settings.policy)
    sizes = dict(num_special_tokens=settings.num_special_tokens, scale_frames=settings.scale_frames,
                 sliding_window=settings.sliding_window, max_frames=settings.max_frames)
    if policy.name != "sliding_window":
        if backend.startswith("flashinfer"):
            raise ValueError(f"the {policy.name!r} policy keeps different tokens per layer and runs on the "
                             "budgeted dense cache, not on FlashInfer: use backend 'auto'")
        return BudgetedKVCache(num_layers, num_heads, head_dim, policy, budget_tokens=settings.budget_tokens,
                               budget=settings.budget, device=device, dtype=dtype, **sizes)
    device = torch.device(device)
    if backend == "auto":
        fast = device.type == "cuda" and dtype in KERNEL_DTYPES and flashinfer_available()
        backend = "flashinfer" if fast else "paged_gather"
    if backend == "dense":
        return DenseKVCache(num_layers, dtype=dtype, **sizes)
    if backend == "paged_gather":
        return PagedGatherCache(num_layers, num_heads, head_dim, device=device, dtype=dtype, **sizes)
    kernel = "fa3" if backend == "flashinfer_fa3" else "fa2"
    return FlashInferCache(num_layers, num_heads, head_dim, device=device, dtype=dtype, backend=kernel,
                           **sizes)
