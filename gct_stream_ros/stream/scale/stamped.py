"""Sensor data kept by stamp, to be matched with the image stamps the engine's results carry.

Results come out later than their images (the model's time, the queue, the scale phase), so
the odometry and depth that arrived meanwhile are kept for a while and looked up by stamp:
depth takes the nearest image within the tolerance; poses are interpolated between the two
around the stamp (positions linearly; the orientation is the nearer one's, which the scale
does not use) when those are at most ``MAX_INTERPOLATION_GAP_NS`` apart, else the nearest
within the tolerance is taken.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Generic, TypeVar

import numpy as np

Item = TypeVar("Item")
MAX_INTERPOLATION_GAP_NS = 500_000_000


class StampedBuffer(Generic[Item]):
    """The last ``capacity`` items by stamp (arrival order does not matter)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._stamps: list[int] = []
        self._items: list[Item] = []

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp_ns: int, item: Item) -> None:
        position = bisect.bisect_right(self._stamps, stamp_ns)
        self._stamps.insert(position, stamp_ns)
        self._items.insert(position, item)
        if len(self._stamps) > self.capacity:
            del self._stamps[0], self._items[0]

    def clear(self) -> None:
        self._stamps.clear()
        self._items.clear()

    def nearest(self, stamp_ns: int, tolerance_ns: int) -> Item | None:
        """The item stamped closest to ``stamp_ns``, if within ``tolerance_ns``."""
        candidates = self._around(stamp_ns)
        if not candidates:
            return None
        position = min(candidates, key=lambda i: abs(self._stamps[i] - stamp_ns))
        return self._items[position] if abs(self._stamps[position] - stamp_ns) <= tolerance_ns else None

    def _around(self, stamp_ns: int) -> Sequence[int]:
        """Indices of the last item at or before ``stamp_ns`` and the first after it (those that exist)."""
        after = bisect.bisect_right(self._stamps, stamp_ns)
        return [i for i in (after - 1, after) if 0 <= i < len(self._stamps)]


class PoseBuffer(StampedBuffer[np.ndarray]):
    """Stamped [4, 4] poses (odometry), interpolated at the stamps asked for."""

    def at(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        """The pose at ``stamp_ns`` (see the module docstring), or None."""
        around = self._around(stamp_ns)
        if len(around) == 2:
            (t0, t1), (p0, p1) = (self._stamps[i] for i in around), (self._items[i] for i in around)
            if t0 <= stamp_ns <= t1 and t1 - t0 <= MAX_INTERPOLATION_GAP_NS:
                weight = 0.0 if t1 == t0 else (stamp_ns - t0) / (t1 - t0)
                pose = np.array(p0 if weight < 0.5 else p1, dtype=np.float64)
                pose[:3, 3] = (1 - weight) * np.asarray(p0)[:3, 3] + weight * np.asarray(p1)[:3, 3]
                return pose
        return self.nearest(stamp_ns, tolerance_ns)
