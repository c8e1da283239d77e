"""Which patch tokens a layer keeps under its budget, at token or frame granularity."""

from __future__ import annotations

import torch


def kept_positions(scores: torch.Tensor, num_protected: int, frames: torch.Tensor, budget: int,
                   granularity: str) -> torch.Tensor | None:
    """Ascending positions ``[M]`` of the tokens to keep, or None when all ``N`` fit in ``budget``.

    The first ``num_protected`` tokens (the scale frames' patches, oldest in the canonical order)
    always stay; of the others the lowest-scoring go until ``M <= budget``, ties going against
    older tokens (stable order). ``token`` granularity needs no device read: the count is known.
    ``frame`` ranks a frame by the mean score of its tokens and drops whole frames, so it may
    drop a few tokens more than needed.
    """
    excess = scores.numel() - budget
    if excess <= 0:
        return None
    candidates = scores[num_protected:]  # [C]
    if granularity == "token":
        kept = torch.sort(candidates, stable=True).indices[excess:].sort().values
    elif granularity == "frame":
        frame_ids, inverse, sizes = torch.unique_consecutive(frames[num_protected:], return_inverse=True,
                                                             return_counts=True)
        frame_scores = torch.zeros(len(frame_ids), dtype=torch.float64, device=scores.device).index_add_(
            0, inverse, candidates.double()) / sizes
        order = torch.sort(frame_scores, stable=True).indices
        dropped_upto = int(torch.searchsorted(sizes[order].cumsum(0), excess)) + 1  # first prefix >= excess
        dropped = torch.zeros(len(frame_ids), dtype=torch.bool, device=scores.device)
        dropped[order[:dropped_upto]] = True
        kept = (~dropped[inverse]).nonzero().squeeze(1)
    else:
        raise ValueError(f"unknown granularity {granularity!r}")
    protected = torch.arange(num_protected, device=scores.device)
    return torch.cat([protected, kept + num_protected])
