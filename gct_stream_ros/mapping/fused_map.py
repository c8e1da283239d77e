"""The accumulated map: keyframe points fused into a bounded voxel grid.

Each voxel keeps the mean position and mean colour of the points that fell into it. When the
grid holds more than ``max_points`` voxels, the ones observed longest ago are evicted, so memory
stays constant however long the stream runs and the map follows the camera.
"""

from __future__ import annotations

import numpy as np

_AXIS_BITS = 21
_AXIS_OFFSET = 1 << (_AXIS_BITS - 1)
_AXIS_LIMIT = _AXIS_OFFSET - 1
"""Voxel coordinates are clipped to +-2^20 cells per axis so three fit in one int64 key."""
_POSITION, _COLOUR, _COUNT = slice(0, 3), slice(3, 6), 6
_SUMS = 7
"""Columns of a voxel's row: position sum (3), colour sum (3), point count."""


class FusedMap:
    """A voxel grid of coloured points with a fixed capacity."""

    def __init__(self, voxel_size: float, max_points: int) -> None:
        if voxel_size <= 0 or max_points < 1:
            raise ValueError(f"voxel_size must be > 0 and max_points >= 1, got {voxel_size}, {max_points}")
        self.voxel_size = float(voxel_size)
        self.max_points = int(max_points)
        self.clear()

    def clear(self) -> None:
        # The voxels' sums stay in their rows of ``_sums`` from insertion to eviction, and an evicted row is
        # reused: a keyframe moves only the two 8-byte index arrays, not the 64-byte rows of a full grid
        # (500k voxels by default, a keyframe every frame). Sums in float64: exact for the colours.
        self._keys = np.zeros(0, dtype=np.int64)  # sorted
        self._rows = np.zeros(0, dtype=np.int64)  # [i]: the row of the voxel of key ``_keys[i]``
        self._sums = np.zeros((0, _SUMS), dtype=np.float64)
        self._last_seen = np.zeros(0, dtype=np.int64)  # per row: the batch that last saw its voxel
        self._free_rows = np.zeros(0, dtype=np.int64)
        self._batches = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, xyz: np.ndarray, rgb: np.ndarray) -> None:
        """Fuse points ``xyz`` [N, 3] (world frame) with colours ``rgb`` [N, 3] uint8; non-finite points are
        ignored."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        rgb = np.asarray(rgb).reshape(-1, 3)
        if not np.isfinite(xyz).all():  # one flat pass; the per-point test and the copies only when needed
            finite = np.isfinite(xyz).all(axis=1)
            xyz, rgb = xyz[finite], rgb[finite]
        if not len(xyz):
            return
        self._batches += 1
        cells = np.clip(np.floor(xyz / self.voxel_size), -_AXIS_LIMIT, _AXIS_LIMIT).astype(np.int64)
        cells += _AXIS_OFFSET
        keys = (cells[:, 0] << (2 * _AXIS_BITS)) | (cells[:, 1] << _AXIS_BITS) | cells[:, 2]
        batch_keys, inverse = np.unique(keys, return_inverse=True)
        batch = np.empty((len(batch_keys), _SUMS))
        batch[:, _POSITION] = _sum_by(inverse, xyz, len(batch_keys))
        batch[:, _COLOUR] = _sum_by(inverse, rgb, len(batch_keys))
        batch[:, _COUNT] = np.bincount(inverse, minlength=len(batch_keys))

        at = np.searchsorted(self._keys, batch_keys)
        known = at < len(self._keys)
        known[known] = self._keys[at[known]] == batch_keys[known]
        hit = self._rows[at[known]]
        self._sums[hit] += batch[known]
        self._last_seen[hit] = self._batches

        fresh = ~known
        rows = self._take_free_rows(int(fresh.sum()))
        self._sums[rows] = batch[fresh]
        self._last_seen[rows] = self._batches
        # New keys go in at their sorted places (np.insert keeps equal places in the given order)
        self._keys = np.insert(self._keys, at[fresh], batch_keys[fresh])
        self._rows = np.insert(self._rows, at[fresh], rows)
        self._evict_oldest()

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """``(xyz [M, 3] float32, rgb [M, 3] uint8)``: one mean point per voxel, in key order."""
        sums = self._sums[self._rows]
        counts = np.maximum(sums[:, _COUNT, None], 1)
        xyz = (sums[:, _POSITION] / counts).astype(np.float32)
        rgb = np.clip(np.round(sums[:, _COLOUR] / counts), 0, 255).astype(np.uint8)
        return xyz, rgb

    def _take_free_rows(self, count: int) -> np.ndarray:
        """``count`` unused rows of ``_sums``, which grows when the free ones are too few."""
        missing = count - len(self._free_rows)
        if missing > 0:
            grown = len(self._sums) + max(missing, len(self._sums) // 2)
            self._free_rows = np.concatenate([self._free_rows, np.arange(len(self._sums), grown)])
            added = grown - len(self._sums)
            self._sums = np.concatenate([self._sums, np.empty((added, _SUMS))])
            self._last_seen = np.concatenate([self._last_seen, np.zeros(added, dtype=np.int64)])
        rows, self._free_rows = self._free_rows[:count], self._free_rows[count:]
        return rows

    def _evict_oldest(self) -> None:
        excess = len(self._keys) - self.max_points
        if excess <= 0:
            return
        # The ``excess`` voxels seen longest ago go: all those of the batches before ``oldest_kept``, then
        # the first ones in key order of that batch, so which voxels survive is deterministic. Linear:
        # batch numbers are counted, not sorted.
        last_seen = self._last_seen[self._rows]  # in key order
        seen_by = np.cumsum(np.bincount(last_seen))  # [b]: voxels last seen in a batch <= b
        oldest_kept = int(np.searchsorted(seen_by, excess))
        keep = last_seen > oldest_kept
        evicted_before = int(seen_by[oldest_kept - 1]) if oldest_kept else 0
        keep[np.flatnonzero(last_seen == oldest_kept)[excess - evicted_before:]] = True
        self._free_rows = np.concatenate([self._free_rows, self._rows[~keep]])
        self._keys = self._keys[keep]
        self._rows = self._rows[keep]


def _sum_by(groups: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """[count, C] sums of the rows of ``values`` [N, C] per group index."""
    columns = [np.bincount(groups, weights=values[:, c], minlength=count) for c in range(values.shape[1])]
    return np.stack(columns, axis=1)
