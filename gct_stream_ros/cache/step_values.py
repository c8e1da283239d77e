"""Integers the host decides once per step, held in one fixed device tensor that kernels read.

A CUDA graph replays its kernels with the arguments of its capture: a slot index or a key range
passed as a Python number would be frozen at the captured step's value. Passed through a
``StepValues`` tensor instead, the same replay reads the values of the step at hand. ``set``
copies them in without blocking the host: from a freshly pinned buffer on CUDA (the host
allocator keeps it alive until the copy has run, so the host may already be preparing the next
step), directly on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class StepValues:
    """A device tensor of ``size`` integers (``values``), refreshed by ``set`` before each step."""

    def __init__(self, size: int, device: torch.device | str, dtype: torch.dtype = torch.int64):
        self.values = torch.zeros(size, dtype=dtype, device=device)

    def set(self, values: Sequence[int]) -> None:
        if len(values) != self.values.numel():
            raise ValueError(f"expected {self.values.numel()} values, got {len(values)}")
        if self.values.is_cuda:
            staged = torch.tensor(values, dtype=self.values.dtype, pin_memory=True)
            self.values.copy_(staged, non_blocking=True)
        else:
            self.values.copy_(torch.tensor(values, dtype=self.values.dtype))
