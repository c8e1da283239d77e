"""Split a fixed token budget over the global layers, between a floor and a ceiling.

Every layer first gets ``floor`` tokens (its protected scale-frame patches); the spare
``num_layers * (mean_budget - floor)`` is shared by weights ``alpha`` that sum to one, so the
total is fixed (never a fraction of an unknown sequence length) and memory stays constant:

* ``uniform``: alpha = 1/L, every layer gets ``mean_budget``;
* ``variance`` (Evict3R): alpha = softmax(-concentration / T): layers whose attention mass is
  spread evenly keep more than layers that attend to a few keys (``attention_mass.concentration``);
* ``diversity`` (InfiniteVGGT): alpha = softmax(diversity / T): layers with more diverse keys
  keep more.

No layer gets more than ``ceiling`` (``layer_ceiling``): each layer's storage is allocated once
at that size, so the ceiling is what a budgeted cache holds in memory. A layer's share above it
goes to the others in proportion to their weights.
"""

from __future__ import annotations

import math

import torch

CEILING_SHARE = 1.5
"""A layer keeps at most this multiple of the mean spare budget (its storage is sized for it)."""


def layer_ceiling(mean_budget: int, floor: int) -> int:
    """The largest budget any layer may get: its storage size in patch tokens."""
    return floor + math.ceil(CEILING_SHARE * (mean_budget - floor))


def layer_budgets(allocator: str, statistics: list[float], mean_budget: int, floor: int,
                  temperature: float) -> list[int]:
    """Per-layer token budgets from the layers' latest statistics (see the module docstring)."""
    num_layers = len(statistics)
    if allocator == "uniform":
        return [mean_budget] * num_layers
    signed = torch.tensor(statistics, dtype=torch.float64)
    if allocator == "variance":
        signed = -signed
    elif allocator != "diversity":
        raise ValueError(f"unknown allocator {allocator!r}")
    alpha = (signed / temperature).softmax(dim=0)
    spare, cap = num_layers * (mean_budget - floor), layer_ceiling(mean_budget, floor) - floor
    shares = torch.zeros_like(alpha)
    free = torch.ones_like(alpha, dtype=torch.bool)
    while free.any():  # water-filling: at most L rounds
        left = spare - float(shares[~free].sum())
        proposed = alpha * free / alpha[free].sum() * left
        capped = free & (proposed > cap)
        if not capped.any():
            shares = torch.where(free, proposed, shares)
            break
        shares[capped] = cap
        free &= ~capped
    return [floor + int(share) for share in shares.tolist()]
