"""Paged cache attended by gathering the visible pages into dense K/V and running SDPA.

For CPU runs, fp32 parity and tests: it reads the store's slots in the canonical key order of
``cache/base.py``, so in fp32 its outputs equal the dense cache's bit for bit.
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.attention import dense_attention
from gct_stream_ros.cache.paged_cache import PagedKVCache


class PagedGatherCache(PagedKVCache):
    """Sliding-window paged cache, any device and dtype (see the module docstring)."""

    def _attend_visible(self, layer: int, q: torch.Tensor) -> torch.Tensor:
        keys, values = self.store.gather(layer)  # [N, H, D] each
        return dense_attention(q, keys, values)
