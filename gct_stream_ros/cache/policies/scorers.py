"""Per-token keep scores of the patch stream (higher = keep), ``[N, H]`` (slot, head), and layer statistics.

* ``recency``: the token's frame index; keeps the newest frames (the sliding window).
* ``key_diversity`` (InfiniteVGGT): keys with the temporal RoPE removed (``temporal_rope.py``,
  otherwise distant frames look diverse just because they are rotated differently),
  L2-normalised; a key's similarity is its dot product with its head's mean normalised key over
  the candidates. Each head keeps its own least similar (most diverse) keys, as seed 004 does.
  Statistic: the layer's diversity, 1 - mean similarity. No fp32 copy of the layer's keys is made.
* ``attention_mass`` (Evict3R): attention each cached key received (``attention_mass.py``),
  accumulated over the steps and divided by the steps it was exposed to; head-shared.
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.policies.fp32_matmul import bmm_fp32
from gct_stream_ros.cache.policies.temporal_rope import TEMPORAL_DIMS, temporal_band


def recency_scores(frames: torch.Tensor) -> torch.Tensor:
    """``frames`` ``[N, H]`` -> ``[N, H]`` fp32."""
    return frames.float()


def diversity_scores(keys: torch.Tensor, frames: torch.Tensor,
                     candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys ``[N, H, D]`` of frames ``[N, H]`` -> (scores ``[N, H]``, diversity ``[]``) over ``candidates``.

    ``candidates`` ``[N, H]`` (bool) marks the evictable keys: the mean key and the diversity are
    taken over them only; the scores of the others are meaningless (the caller overrides them).
    A rotation keeps the norm, so each key is normalised by its stored norm; only its 20
    temporal dims are un-rotated in fp32, the 44 spatial dims are read as stored (``bmm_fp32``).
    """
    norms = torch.linalg.vector_norm(keys, dim=-1, dtype=torch.float32).clamp(min=1e-12)  # [N, H]
    weight = candidates.float() / norms  # [N, H]: normalised candidates, 0 elsewhere
    count = candidates.sum(dim=0).clamp(min=1).float()  # [H]
    temporal = temporal_band(keys, frames, inverse=True)  # [N, H, 20] fp32
    spatial = keys[..., TEMPORAL_DIMS:]  # [N, H, 44] as stored
    mean_temporal = torch.einsum("nhd,nh->hd", temporal, weight) / count.unsqueeze(-1)  # [H, 20]
    mean_spatial = bmm_fp32(spatial.permute(1, 2, 0), weight.t().unsqueeze(-1)).squeeze(-1)  # [H, 44]
    mean_spatial = mean_spatial / count.unsqueeze(-1)
    dot = (temporal * mean_temporal).sum(dim=-1)  # [N, H]
    dot = dot + bmm_fp32(spatial.permute(1, 0, 2), mean_spatial.unsqueeze(-1)).squeeze(-1).t()
    similarity = dot / norms
    mean_similarity = ((similarity * candidates).sum(dim=0) / count).mean()
    return -similarity, 1.0 - mean_similarity


def mass_scores(mass: torch.Tensor, exposure: torch.Tensor) -> torch.Tensor:
    """Mean mass per exposure; never-scored tokens (exposure 0) score 0."""
    return mass / exposure.clamp(min=1.0)
