"""Which patch tokens a layer keeps under its budget, at token or frame granularity."""

from __future__ import annotations

import torch


def keep_mask(scores: torch.Tensor, protected: torch.Tensor, frames: torch.Tensor, budget: int,
              granularity: str) -> torch.Tensor:
    """Boolean ``[N]``: drop the lowest-scoring unprotected tokens (or whole frames) until <= budget.

    Ties go against older tokens (stable order). ``frame`` granularity ranks a frame by the mean
    score of its tokens and drops whole frames, so it may drop a few tokens more than needed.
    """
    excess = scores.numel() - budget
    keep = torch.ones_like(protected)
    if excess <= 0:
        return keep
    candidates = (~protected).nonzero().squeeze(1)  # [C]
    if granularity == "token":
        order = torch.sort(scores[candidates], stable=True).indices
        keep[candidates[order[:excess]]] = False
        return keep
    if granularity != "frame":
        raise ValueError(f"unknown granularity {granularity!r}")
    frame_ids, inverse, sizes = torch.unique(frames[candidates], return_inverse=True, return_counts=True)
    frame_scores = torch.zeros(len(frame_ids), dtype=torch.float64, device=scores.device).index_add_(
        0, inverse, scores[candidates].double()) / sizes
    order = torch.sort(frame_scores, stable=True).indices
    dropped_upto = int(torch.searchsorted(sizes[order].cumsum(0), excess)) + 1  # first prefix >= excess
    keep[candidates[torch.isin(frames[candidates], frame_ids[order[:dropped_upto]])]] = False
    return keep
