"""Split a fixed token budget over the global layers.

Every layer first gets ``floor`` tokens (its protected scale-frame patches); the remainder of
``num_layers * mean_budget`` is shared by weights ``alpha`` that sum to one, so the total
is fixed (never a fraction of an unknown sequence length) and memory stays constant:

* ``uniform``: alpha = 1/L, every layer gets ``mean_budget``;
* ``variance`` (Evict3R): alpha = softmax(-variance / T): layers whose attention mass is spread
  evenly keep more than layers that attend to a few keys;
* ``diversity`` (InfiniteVGGT): alpha = softmax(diversity / T): layers with more diverse keys
  keep more.
"""

from __future__ import annotations

import torch


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
    spare = num_layers * (mean_budget - floor)
    return [floor + int(share * spare) for share in alpha.tolist()]
