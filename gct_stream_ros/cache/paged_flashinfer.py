"""Paged cache attended with FlashInfer's ``BatchPrefillWithPagedKVCacheWrapper`` (CUDA, bf16/fp16).

Same store and step semantics as the gather cache; only single-frame attention differs:
``plan()`` runs once per step at layer 0 (every layer has the same page structure under the
sliding-window policy) and each layer calls ``run()`` on its own pool, non-causal, no positional
encoding in the kernel (RoPE is in the cached keys), default softmax scale, 128 MiB workspace.

* ``backend="fa2"`` (default): page size = patches per frame, one request, as the reference.
* ``backend="fa3"`` (SM90): page size = next power of two. The reference zero-pads every patch
  page and lets the kernel attend the padding; here the patch stream is packed densely, so only
  its last page is partial, and the two streams become two requests whose outputs are merged by
  log-sum-exp (``page_table.py``): exact, unmasked, no padding attended.

``flashinfer`` is imported when a cache is built, with a clear error when it is missing.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

import torch

from gct_stream_ros.cache.attention import HALF_DTYPES
from gct_stream_ros.cache.page_table import build_requests
from gct_stream_ros.cache.paged_cache import PagedKVCache

WORKSPACE_BYTES = 128 << 20
KERNEL_BACKENDS = ("fa2", "fa3")
KERNEL_DTYPES = HALF_DTYPES


def flashinfer_available() -> bool:
    return importlib.util.find_spec("flashinfer") is not None


def import_flashinfer() -> ModuleType:
    try:
        import flashinfer
    except ImportError as error:
        raise ImportError("the FlashInfer KV cache needs flashinfer-python (0.6.x) on a CUDA machine; "
                          "install it or use the 'paged_gather' cache backend") from error
    return flashinfer


def power_of_two_at_least(n: int) -> int:
    return 1 << (n - 1).bit_length()


class FlashInferCache(PagedKVCache):
    """Sliding-window paged cache with FlashInfer attention (see the module docstring)."""

    def __init__(self, num_layers: int, num_heads: int, head_dim: int, num_special_tokens: int = 6,
                 scale_frames: int = 8, sliding_window: int = 64, max_frames: int = 0,
                 device: torch.device | str = "cuda", dtype: torch.dtype = torch.bfloat16,
                 backend: str = "fa2"):
        if backend not in KERNEL_BACKENDS:
            raise ValueError(f"backend={backend!r} is not one of {', '.join(KERNEL_BACKENDS)}")
        if dtype not in KERNEL_DTYPES:
            raise ValueError(f"FlashInfer attends in bf16/fp16 only, not {dtype}; use the gather backend")
        self._flashinfer = import_flashinfer()
        self.kernel_backend = backend
        self._wrapper = None
        self._page_ids: torch.Tensor | None = None
        self._num_requests = 1
        super().__init__(num_layers, num_heads, head_dim, num_special_tokens, scale_frames, sliding_window,
                         max_frames, device, dtype)

    def _page_size(self, patches_per_frame: int) -> int:
        return power_of_two_at_least(patches_per_frame) if self.kernel_backend == "fa3" else patches_per_frame

    def _attend_visible(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        num_queries = q.shape[1]
        if layer == 0:
            self._plan(num_queries)
        query = q[0].to(self.dtype).contiguous()  # [P, H, D]
        pool = self.store.pools[layer]
        if self._num_requests == 1:
            out = self._wrapper.run(query, pool)
        else:
            out, lse = self._wrapper.run(query.repeat(2, 1, 1), pool, return_lse=True)  # [2P, H, D], [2P, H]
            out, _ = self._flashinfer.merge_state(out[:num_queries], lse[:num_queries],
                                                  out[num_queries:], lse[num_queries:])
        return out.to(q.dtype).unsqueeze(0)

    def _plan(self, num_queries: int) -> None:
        store = self.store
        if self._wrapper is None:
            workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=self.device)
            self._wrapper = self._flashinfer.BatchPrefillWithPagedKVCacheWrapper(
                workspace, kv_layout="NHD", backend=self.kernel_backend)
        if self._page_ids is None or self._page_ids.numel() != store.num_pages:
            self._page_ids = torch.arange(store.num_pages, dtype=torch.int32, device=self.device)
        requests = build_requests(store.segments(), store.page_size, num_queries, self._page_ids)
        self._wrapper.plan(requests.qo_indptr, requests.kv_indptr, requests.kv_indices,
                           requests.kv_last_page_len, num_qo_heads=self.num_heads,
                           num_kv_heads=self.num_heads, head_dim_qk=self.head_dim,
                           page_size=store.page_size, causal=False, pos_encoding_mode="NONE",
                           q_data_type=self.dtype)
        self._num_requests = requests.num_requests
