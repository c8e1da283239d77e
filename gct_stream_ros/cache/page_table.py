"""The page table handed to FlashInfer's ``plan()``, built from the store's stream segments.

A FlashInfer request is a list of pages of which only the last may be partial. The store's two
streams are dense page runs (patch pages, then special pages), so:

* when the patch stream fills its pages exactly (FA2: page size = patches per frame) both
  streams form ONE request, as in the reference;
* otherwise (FA3 needs a power-of-two page size, so the patch stream's last page is partial)
  the streams become TWO requests over the same queries, whose outputs are merged with their
  log-sum-exps. No padding slot is ever attended and no mask is needed.

``qo_indptr``, ``kv_indptr`` and ``kv_last_page_len`` stay on the host because ``plan()`` reads
them there anyway (handing it device tensors would force device->host syncs); the page ids,
the only array that grows with the cache, are sliced from a device-resident ``arange`` without
any host round trip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gct_stream_ros.cache.paged_store import Segment


@dataclass(frozen=True)
class PagedRequests:
    """Inputs of ``BatchPrefillWithPagedKVCacheWrapper.plan`` (R requests, one query block each)."""

    qo_indptr: torch.Tensor  # [R + 1] int32, host
    kv_indptr: torch.Tensor  # [R + 1] int32, host
    kv_indices: torch.Tensor  # [pages] int32, on the pools' device
    kv_last_page_len: torch.Tensor  # [R] int32, host

    @property
    def num_requests(self) -> int:
        return self.kv_last_page_len.numel()


def build_requests(segments: list[Segment], page_size: int, num_queries: int,
                   page_ids: torch.Tensor) -> PagedRequests:
    """Group the non-empty ``segments`` into requests; ``page_ids`` is ``arange(num_pages)`` on the device."""
    requests: list[list[Segment]] = []
    for segment in (s for s in segments if s.num_tokens > 0):
        if requests and sum(s.num_tokens for s in requests[-1]) % page_size == 0:
            requests[-1].append(segment)
        else:
            requests.append([segment])
    if not requests:
        raise ValueError("no visible tokens to attend")
    pages_per_request = [sum(math.ceil(s.num_tokens / page_size) for s in request) for request in requests]
    last_lengths = [request[-1].num_tokens - (math.ceil(request[-1].num_tokens / page_size) - 1) * page_size
                    for request in requests]
    indices = torch.cat([page_ids[s.first_page:s.first_page + math.ceil(s.num_tokens / page_size)]
                         for request in requests for s in request])
    kv_indptr = torch.tensor([0] + pages_per_request, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    qo_indptr = torch.arange(len(requests) + 1, dtype=torch.int32) * num_queries
    return PagedRequests(qo_indptr=qo_indptr, kv_indptr=kv_indptr, kv_indices=indices,
                         kv_last_page_len=torch.tensor(last_lengths, dtype=torch.int32))
