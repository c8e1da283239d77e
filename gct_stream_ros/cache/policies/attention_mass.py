"""Attention mass each cached key receives from a frame's queries, without the ``[H, Q, K]`` matrix.

Evict3R scores a key by the attention it receives: the head-mean of the softmax probabilities
summed over the frame's queries. Materialising ``softmax(QK^T)`` costs ``H x Q x K`` floats per
layer (GBs at the reference's cache length), so the mass is reduced over the keys in chunks,
accumulated in fp32, from each query's log-sum-exp over all keys: a chunk's logits turn into
probabilities with it (``exp(s - lse)``) and are reduced at once. Only ``H x Q x chunk`` logits
exist at a time (``CHUNK_ELEMENTS``).

The log-sum-exp is the attention's own where the step attends over exactly the scored keys
(``lse``: the flash/cuDNN kernels return it, ``pool_attention.py``), so the mass is one more
read of the keys; without it a first pass over the keys computes it.

Queries (``MASS_QUERIES``):

* ``exact``: every query of the frame; the mass of the full probability matrix, as Evict3R.
* ``sampled``: a subset of the frame's real queries: its special tokens plus one patch query per
  group of about ``POOL_GROUP`` consecutive patches (the group's middle one, ``stand_in_rows``),
  ~1/16 of the work. The groups are as equal as can be, and as many as make the queries fill
  whole tiles of the fused kernel (``sampled_groups``): a 378x504 frame's 972 patches in 58
  groups of 16-17, 64 queries with the 6 specials, where one per 16 patches would be 67 and pad
  to 80 (every padded query costs each key an exponential, ``fused_mass.py``). XStreamVGGT's
  proxy mean-pools each group instead; a mean-pooled query is not one the attention ran, so it
  has no log-sum-exp there, and one pass over the keys needs it. Each query is weighted by the
  number of queries it stands for (1 for a special, the group's size for a patch), so the 6
  special tokens weigh their share of the frame and not ~15x more.

Either way the mass sums to the number of queries of the frame (every probability row sums to 1).

``num_keys`` (a 0-d device tensor): only that many first keys count and the rest get 0, so that a
fixed-shape step (``budgeted_cache.py``) passes its whole storage and reads the count on the device.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch

from gct_stream_ros.cache.policies import fused_mass, fused_ranking
from gct_stream_ros.cache.policies.fp32_matmul import bmm_fp32
from gct_stream_ros.cache.policies.fused_mass import QUERY_TILE

MASS_QUERIES = ("sampled", "exact")
POOL_GROUP = 16
CHUNK_ELEMENTS = 1 << 25
"""Logits held at a time (128 MiB in fp32)."""


def sampled_groups(num_patches: int, num_special_tokens: int) -> int:
    """How many groups ``sampled`` splits ``num_patches`` into: about one per ``POOL_GROUP``, rounded so
    that the specials and the groups' stand-ins fill whole tiles of ``fused_mass.QUERY_TILE`` queries
    (at least one group, at most one per patch)."""
    about = num_special_tokens + -(-num_patches // POOL_GROUP)
    tiles = max(1, round(about / QUERY_TILE))
    return max(1, min(num_patches, tiles * QUERY_TILE - num_special_tokens))


@functools.cache
def stand_in_rows(num_queries: int, num_special_tokens: int, mode: str,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``[Q]`` (int64) of a frame's ``num_queries`` queries that measure the mass in ``mode`` and
    their weights ``[Q]`` fp32 (see the module docstring).

    Built once per frame size and device: do not modify them.
    """
    if mode not in MASS_QUERIES:
        raise ValueError(f"attention-mass queries {mode!r} are not one of {', '.join(MASS_QUERIES)}")
    # made on the device by kernels, never copied from the host: a copy would synchronise (once
    # per size, but at a step that may not be a capture)
    if mode == "exact":
        return (torch.arange(num_queries, device=device),
                torch.ones(num_queries, dtype=torch.float32, device=device))
    patches = num_queries - num_special_tokens
    groups = sampled_groups(patches, num_special_tokens)
    size, larger = divmod(patches, groups)  # the first ``larger`` groups hold one patch more
    group = torch.arange(groups, device=device)
    sizes = size + (group < larger).long()
    middles = num_special_tokens + group * size + group.clamp(max=larger) + sizes // 2
    weights = torch.cat([torch.ones(num_special_tokens, device=device), sizes.float()])
    return torch.cat([torch.arange(num_special_tokens, device=device), middles]), weights


def stand_in_queries(q: torch.Tensor, num_special_tokens: int,
                     mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One frame's queries ``[P, H, D]`` -> (queries ``[Q, H, D]``, weights ``[Q]`` fp32) for ``mode``: the
    rows ``stand_in_rows`` names (``q`` itself for ``exact``)."""
    rows, weights = stand_in_rows(q.shape[0], num_special_tokens, mode, q.device)
    return (q if mode == "exact" else q.index_select(0, rows)), weights


def attention_mass(queries: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor,
                   chunk_elements: int = CHUNK_ELEMENTS, num_keys: torch.Tensor | None = None,
                   lse: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mass ``[K]`` fp32 each key of ``keys`` ``[K, H, D]`` receives from ``queries`` ``[Q, H, D]``.

    ``mass_k = sum_q weights_q * mean_h softmax_k(q . k / sqrt(D))``; ``lse`` ``[H, Q]`` fp32: the
    queries' log-sum-exp over the (first ``num_keys``) keys where known (see the module docstring).
    CUDA half-precision keys go through the fused kernel (``fused_mass.py``; ``chunk_elements``
    does not apply there).
    """
    if lse is None:
        lse = torch.full(queries.shape[1::-1], float("-inf"), device=keys.device)  # [H, Q]
        for _, logits in _chunk_logits(queries, keys, chunk_elements, num_keys):
            lse = torch.logaddexp(lse, logits.logsumexp(dim=-1))
    if fused_ranking.available(keys):
        return fused_mass.attention_mass(queries, weights, lse, keys, num_keys)
    num_heads = queries.shape[1]
    per_query = (weights.float() / num_heads).expand(num_heads, -1).unsqueeze(1)  # [H, 1, Q]
    mass = torch.empty(keys.shape[0], dtype=torch.float32, device=keys.device)
    for start, logits in _chunk_logits(queries, keys, chunk_elements, num_keys):
        probabilities = logits.sub_(lse.unsqueeze(-1)).exp_()  # [H, Q, c]
        received = torch.bmm(per_query, probabilities).sum(dim=0).squeeze(0)  # [c]
        mass[start:start + received.shape[0]] = received
    return mass


def _chunk_logits(queries: torch.Tensor, keys: torch.Tensor, chunk_elements: int,
                  num_keys: torch.Tensor | None) -> Iterator[tuple[int, torch.Tensor]]:
    """(first key, scaled logits ``[H, Q, c]`` fp32) of consecutive chunks of ``keys``; ``-inf`` from the
    ``num_keys``-th key on (a 0-d device tensor) where given."""
    num_queries, num_heads, head_dim = queries.shape
    outside = None if num_keys is None else torch.arange(keys.shape[0], device=keys.device) >= num_keys
    chunk = max(1, chunk_elements // (num_heads * num_queries))
    # in the keys' dtype (1/sqrt(64) is exact), so that the matmul reads the keys as stored
    scaled = (queries.float() * head_dim**-0.5).to(keys.dtype).permute(1, 0, 2)  # [H, Q, D]
    for start in range(0, keys.shape[0], chunk):
        logits = bmm_fp32(scaled, keys[start:start + chunk].permute(1, 2, 0))  # [H, Q, c]
        if outside is not None:
            logits.masked_fill_(outside[start:start + chunk], float("-inf"))
        yield start, logits


def concentration(mass: torch.Tensor, num_keys: torch.Tensor | None = None) -> torch.Tensor:
    """How unevenly ``mass`` ``[K]`` is spread: ``log(1 + var(mass / mean mass))``, a scalar tensor
    (over the first ``num_keys``, a 0-d device tensor, where given).

    Evict3R allocates layer budgets by the variance of the raw mass, whose magnitude scales with
    ``(queries / keys)^2``: at the reference's cache length it is ~1e-6 in every layer and the
    softmax over layers comes out uniform. Dividing by the mean removes the scale (0 for
    perfectly even attention, ``K - 1`` when all of it lands on one key); the log keeps layers
    that differ by orders of magnitude within reach of the allocator's temperature.
    """
    if num_keys is None:
        normalised = mass / mass.mean()
        return torch.log1p(normalised.var(unbiased=False))
    # the same over the first ``num_keys`` (a 0-d device tensor; the rest of ``mass`` is 0)
    count = num_keys.float()
    in_use = torch.arange(mass.shape[0], device=mass.device) < num_keys
    normalised = mass / (mass.sum() / count)
    deviation = torch.where(in_use, normalised - normalised.sum() / count, 0.0)
    return torch.log1p(deviation.square().sum() / count)
