"""Device values read by the host a while after they were computed, without waiting for the device.

The budgeted cache re-allocates its layer budgets from statistics computed on the device. Reading
them when they are needed would stall the host until the device caught up (one sync per step).
Instead ``take`` starts an asynchronous copy into pinned host memory and ``read`` returns it
later: a whole re-allocation period later, when the copy has long finished, so the event wait in
``read`` returns at once.
"""

from __future__ import annotations

import torch


class HostSnapshot:
    """One pinned host buffer for a device vector, filled asynchronously."""

    def __init__(self, size: int, device: torch.device) -> None:
        self._on_cuda = device.type == "cuda"
        self._host = torch.zeros(size, dtype=torch.float32, pin_memory=self._on_cuda)
        self._copied: torch.cuda.Event | None = None
        self.taken = False

    def take(self, values: torch.Tensor) -> None:
        """Start copying ``values`` ``[size]`` to the host."""
        self._host.copy_(values.detach().float(), non_blocking=self._on_cuda)
        if self._on_cuda:
            self._copied = torch.cuda.Event()
            self._copied.record()
        self.taken = True

    def read(self) -> list[float]:
        """The values of the last ``take`` (waits only if that copy has not finished yet)."""
        if self._copied is not None:
            self._copied.synchronize()
        return self._host.tolist()

    def clear(self) -> None:
        self.taken = False
