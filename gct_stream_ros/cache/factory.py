"""Build the global-attention KV cache for a session: policy, backend, sizes.

Backends (``backend=``, the node's ``cache.backend``):

* ``"auto"``: in bf16/fp16 on a Hopper GPU (sm90+, where it was measured fastest,
  ``benchmarks/README.md``) ``contiguous``; on other CUDA GPUs FlashInfer (FA2) when it is
  importable; otherwise ``paged_gather``, which runs anywhere and equals the dense cache bit for
  bit in fp32 while keeping its pools pre-allocated.
* ``"contiguous"``: contiguous storage attended in place by SDPA (cuDNN once the window is
  full), ``contiguous_cache.py``; bit-exact with the dense cache in fp32.
* ``"dense"``: the per-frame dense cache (the yardstick of the parity tests).
* ``"paged_gather"``: paged store + gather + SDPA.
* ``"flashinfer"`` / ``"flashinfer_fa3"``: paged store + FlashInfer, FA2 or FA3 kernels.

Only the ``sliding_window`` policy runs on these backends. The other policies (``evict3r``,
``infinitevggt`` or any ``CachePolicy`` composition) keep per-layer token sets of different
sizes and run on ``BudgetedKVCache``, on the given device; asking them for another backend
than ``auto`` is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from gct_stream_ros.cache.base import GlobalKVCache
from gct_stream_ros.cache.contiguous_cache import ContiguousKVCache
from gct_stream_ros.cache.dense import DenseKVCache
from gct_stream_ros.cache.options import BACKENDS
from gct_stream_ros.cache.paged_flashinfer import KERNEL_DTYPES, FlashInferCache, flashinfer_available
from gct_stream_ros.cache.paged_gather import PagedGatherCache
from gct_stream_ros.cache.policies.budget import DEFAULT_BUDGET, POLICY_CADENCE
from gct_stream_ros.cache.policies.budgeted_cache import BudgetedKVCache
from gct_stream_ros.cache.policies.policy import CachePolicy, policy_preset
from gct_stream_ros.cache.sizes import DEFAULT_MAX_FRAMES

CONTIGUOUS_MIN_CAPABILITY = (9, 0)
"""``auto`` picks the contiguous cache from Hopper on: measured there (H200), cuDNN's attention
kernels differ by architecture."""


class EngineCacheFields(Protocol):
    """The cache fields of ``stream.config.EngineConfig`` (the cache package cannot import it)."""

    num_scale_frames: int
    cache_policy: str
    cache_sliding_window: int
    cache_budget: float
    cache_budget_tokens: int
    cache_evict_every: int
    cache_max_frames: int
    cache_backend: str


@dataclass(frozen=True)
class CacheSettings:
    """What a cache needs from the session settings (defaults = ``EngineConfig``'s)."""

    policy: str | CachePolicy = "sliding_window"
    scale_frames: int = 8
    sliding_window: int = 64
    budget: float = DEFAULT_BUDGET
    budget_tokens: int = 0
    evict_every: int = POLICY_CADENCE
    max_frames: int = DEFAULT_MAX_FRAMES
    num_special_tokens: int = 6
    backend: str = "auto"

    @classmethod
    def from_config(cls, config: EngineCacheFields) -> CacheSettings:
        return cls(policy=config.cache_policy, scale_frames=config.num_scale_frames,
                   sliding_window=config.cache_sliding_window, budget=config.cache_budget,
                   budget_tokens=config.cache_budget_tokens, evict_every=config.cache_evict_every,
                   max_frames=config.cache_max_frames,
                   backend=config.cache_backend)


def build_cache(settings: CacheSettings | EngineCacheFields, num_layers: int, num_heads: int, head_dim: int,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                backend: str | None = None) -> GlobalKVCache:
    """The cache for ``settings`` (a ``CacheSettings`` or an ``EngineConfig``); see the module docstring.

    ``backend`` overrides the settings' backend.
    """
    if not isinstance(settings, CacheSettings):
        settings = CacheSettings.from_config(settings)
    backend = settings.backend if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"cache backend {backend!r} is not one of {', '.join(BACKENDS)}")
    policy = settings.policy if isinstance(settings.policy, CachePolicy) else policy_preset(settings.policy)
    sizes = dict(num_special_tokens=settings.num_special_tokens, scale_frames=settings.scale_frames,
                 sliding_window=settings.sliding_window, max_frames=settings.max_frames)
    if policy.name != "sliding_window":
        if backend != "auto":
            raise ValueError(f"the {policy.name!r} policy keeps different tokens per layer and runs on the "
                             f"budgeted dense cache, not on {backend!r}: use backend 'auto'")
        return BudgetedKVCache(num_layers, num_heads, head_dim, policy, budget_tokens=settings.budget_tokens,
                               budget=settings.budget, evict_every=settings.evict_every, device=device,
                               dtype=dtype, **sizes)
    device = torch.device(device)
    if backend == "auto":
        backend = _auto_backend(device, dtype)
    if backend == "contiguous":
        return ContiguousKVCache(num_layers, num_heads, head_dim, device=device, dtype=dtype, **sizes)
    if backend == "dense":
        return DenseKVCache(num_layers, dtype=dtype, **sizes)
    if backend == "paged_gather":
        return PagedGatherCache(num_layers, num_heads, head_dim, device=device, dtype=dtype, **sizes)
    kernel = "fa3" if backend == "flashinfer_fa3" else "fa2"
    return FlashInferCache(num_layers, num_heads, head_dim, device=device, dtype=dtype, backend=kernel,
                           **sizes)


def _auto_backend(device: torch.device, dtype: torch.dtype) -> str:
    """The fastest sliding-window backend measured for the device and dtype (module docstring)."""
    if device.type != "cuda" or dtype not in KERNEL_DTYPES:
        return "paged_gather"
    if torch.cuda.get_device_capability(device) >= CONTIGUOUS_MIN_CAPABILITY:
        return "contiguous"
    return "flashinfer" if flashinfer_available() else "paged_gather"
