"""Which slots a layer frees: the lowest-scoring, at token or frame granularity, per head or head-shared."""

from __future__ import annotations

import torch

from gct_stream_ros.cache.policies import fused_moves, fused_select


def evicted_slots(scores: torch.Tensor, count: int, granularity: str, per_head: bool,
                  frames: torch.Tensor) -> torch.Tensor:
    """Slots ``[count, H]``, each column ascending (as ``TokenPool.remove`` takes them), with the lowest
    ``scores`` ``[N, H]`` (protected slots score +inf, never chosen).

    ``per_head``: every head frees its own ``count`` slots; otherwise head 0's choice is every
    head's (the scorer is head-shared; ``scores`` may then hold head 0 alone, ``[N, 1]``; ``H``
    is ``frames``'). ``frame`` granularity ranks a frame by the mean score of
    its slots and frees whole frames: the caller's ``count`` is then a whole number of frames'
    patches (+ expired specials), and sorting by frame before ranking keeps a frame's slots
    together. ``count`` is known on the host, so token granularity never reads the device; frame
    granularity (not used by a preset) reads it once to number the frames. On CUDA, token
    granularity is ``fused_select.smallest`` (ties by the lowest slot, in slot order); elsewhere
    ``torch.topk``, then sorted.
    """
    if granularity == "token":
        # rows [H, N] (contiguous when the scores come as ``[H, N].t()``) or head 0's [1, N]
        rows = scores.t() if per_head else scores[:, :1].t()
        if fused_moves.available(scores):
            chosen = fused_select.smallest(rows, count)
        else:
            chosen = torch.topk(rows, count, dim=-1, largest=False, sorted=False).indices.t()
            chosen = chosen.sort(dim=0).values
        if per_head:
            return chosen
        chosen = chosen[:, 0]
    elif granularity == "frame":
        shared, frame = scores[:, 0].double(), frames[:, 0].long()
        evictable = torch.isfinite(shared) & (shared > torch.finfo(scores.dtype).min)  # live patch slots
        _, inverse = torch.unique(frame, return_inverse=True)  # reads the device (frame granularity only)
        total = torch.zeros(scores.shape[0], dtype=torch.float64, device=scores.device)
        size = torch.zeros_like(total)
        total.index_add_(0, inverse, torch.where(evictable, shared, 0.0))
        size.index_add_(0, inverse, evictable.double())
        ranked = torch.where(evictable, (total / size.clamp(min=1.0))[inverse], shared)
        by_frame = torch.argsort(frame, stable=True)
        chosen = by_frame[torch.argsort(ranked[by_frame], stable=True)][:count].sort().values
    else:
        raise ValueError(f"unknown granularity {granularity!r}")
    return chosen.unsqueeze(1).expand(count, frames.shape[1])
