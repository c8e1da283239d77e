"""Per-token keep scores of the patch stream (higher = keep), ``[N, H]`` (slot, head), and layer statistics.

* ``recency``: the token's frame index; keeps the newest frames (the sliding window).
* ``key_diversity`` (InfiniteVGGT): keys with the temporal RoPE removed (``temporal_rope.py``,
  otherwise distant frames look diverse just because they are rotated differently),
  L2-normalised; a key's similarity is its dot product with its head's mean normalised key over
  the candidates. Each head keeps its own least similar (most diverse) keys, as seed 004 does.
  Statistic: the layer's diversity, 1 - mean similarity. Computed in chunks of keys so that no
  fp32 copy of the whole layer exists.
* ``attention_mass`` (Evict3R): attention each cached key received (``attention_mass.py``),
  accumulated over the steps and divided by the steps it was exposed to; head-shared.
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.policies.temporal_rope import rotate_temporal

CHUNK_TOKENS = 32768
"""Keys converted to fp32 at a time by the diversity scorer (128 MiB at 16 heads x 64)."""


def recency_scores(frames: torch.Tensor) -> torch.Tensor:
    """``frames`` ``[N, H]`` -> ``[N, H]`` fp32."""
    return frames.float()


def diversity_scores(keys: torch.Tensor, frames: torch.Tensor, candidates: torch.Tensor,
                     chunk_tokens: int = CHUNK_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys ``[N, H, D]`` of frames ``[N, H]`` -> (scores ``[N, H]``, diversity ``[]``) over ``candidates``.

    ``candidates`` ``[N, H]`` (bool) marks the evictable keys: the mean key and the diversity are
    taken over them only; the scores of the others are meaningless (the caller overrides them).
    """
    def content(start: int) -> torch.Tensor:
        part = slice(start, start + chunk_tokens)
        return torch.nn.functional.normalize(rotate_temporal(keys[part], frames[part], inverse=True), dim=-1)

    weight = candidates.float()  # [N, H]
    total = torch.zeros(keys.shape[1:], dtype=torch.float32, device=keys.device)  # [H, D]
    for start in range(0, keys.shape[0], chunk_tokens):
        total += torch.einsum("nhd,nh->hd", content(start), weight[start:start + chunk_tokens])
    count = weight.sum(dim=0).clamp(min=1.0)  # [H]
    mean_key = total / count.unsqueeze(-1)
    similarity = torch.empty(keys.shape[:2], dtype=torch.float32, device=keys.device)  # [N, H]
    for start in range(0, keys.shape[0], chunk_tokens):
        similarity[start:start + chunk_tokens] = (content(start) * mean_key).sum(dim=-1)
    mean_similarity = ((similarity * weight).sum(dim=0) / count).mean()
    return -similarity, 1.0 - mean_similarity


def mass_scores(mass: torch.Tensor, exposure: torch.Tensor) -> torch.Tensor:
    """Mean mass per exposure; never-scored tokens (exposure 0) score 0."""
    return mass / exposure.clamp(min=1.0)
