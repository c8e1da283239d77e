"""Per-token keep scores of the patch stream (higher = keep) and the per-layer statistics they yield.

* ``recency``: the token's frame index; keeps the newest frames (the sliding window).
* ``key_diversity`` (InfiniteVGGT): keys with the temporal RoPE removed (``temporal_rope.py``,
  otherwise distant frames look diverse just because they are rotated differently),
  L2-normalised per head; a key's similarity is its dot product with the head's mean
  normalised key, averaged over heads; the least similar (most diverse) keys are kept.
  Statistic: the layer's diversity, 1 - mean similarity.
* ``attention_mass`` (Evict3R): attention each cached key receives, accumulated over the steps
  and divided by the steps it was exposed to. The exact column sums would need the full
  ``P x K`` probability matrix (GBs at the reference's cache length) and a non-fused kernel, so
  the mass is measured with a sample of the frame's queries: its special tokens (the camera
  and register tokens summarise the frame and are what reads the global context) plus its
  patch queries mean-pooled in groups of 16 (XStreamVGGT's proxy): ~1/16 of the cost, and the
  fused attention of the step itself stays untouched. As in Evict3R the per-step mass is
  multiplied by the number of keys so steps with different cache lengths weigh alike, and the
  accumulators are fp32 (fp16 overflows after ~60 steps). Statistic: the variance of the step's
  un-scaled mass over the keys.
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.policies.temporal_rope import rotate_temporal

POOL_GROUP = 16


def recency_scores(frames: torch.Tensor) -> torch.Tensor:
    """``frames`` ``[N]`` -> ``[N]`` fp32."""
    return frames.float()


def diversity_scores(keys: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys ``[N, H, D]`` of frames ``[N]`` -> (scores ``[N]``, the layer's diversity ``[]``)."""
    content = torch.nn.functional.normalize(rotate_temporal(keys, frames, inverse=True), dim=-1)  # [N, H, D]
    mean_key = content.mean(dim=0, keepdim=True)  # [1, H, D]
    similarity = (content * mean_key).sum(dim=-1).mean(dim=-1)  # [N]
    return -similarity, 1.0 - similarity.mean()


def sampled_queries(q: torch.Tensor, num_special_tokens: int) -> torch.Tensor:
    """One frame's queries ``[P, H, D]`` -> its specials + mean-pooled patch groups ``[Q, H, D]``."""
    patches = q[num_special_tokens:]
    groups = [chunk.mean(dim=0) for chunk in patches.split(POOL_GROUP)]
    return torch.cat([q[:num_special_tokens], torch.stack(groups)])


def attention_mass(queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mass each key receives from ``queries`` ``[Q, H, D]``: (``[K]`` fp32 scaled by K, variance ``[]``)."""
    scale = queries.shape[-1] ** -0.5
    logits = torch.einsum("qhd,khd->hqk", queries.float(), keys.float()) * scale  # [H, Q, K]
    mass = logits.softmax(dim=-1).mean(dim=0).sum(dim=0)  # [K]
    return mass * keys.shape[0], mass.var(unbiased=False)


def mass_scores(mass: torch.Tensor, exposure: torch.Tensor) -> torch.Tensor:
    """Mean mass per exposure; never-scored tokens (exposure 0) score 0."""
    return mass / exposure.clamp(min=1.0)
