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
_POSITION, _COLOUR, _COUNT, _LAST_SEEN = slice(0, 3), slice(3, 6), 6, 7
_COLUMNS = 8


class FusedMap:
    """A voxel grid of coloured points with a fixed capacity."""

    def __init__(self, voxel_size: float, max_points: int) -> None:
        if voxel_size <= 0 or max_points < 1:
            raise ValueError(f"voxel_size must be > 0 and max_points >= 1, got {voxel_size}, {max_points}")
        self.voxel_size = float(voxel_size)
        self.max_points = int(max_points)
        self.clear()

    def clear(self) -> None:
        self._keys = np.zeros(0, dtype=np.int64)  # sorted
        # one row per voxel: position sum (3), colour sum (3), count, batch last seen (exact in float64);
        # one array, so a merge or an eviction is one pass over the grid, not one per quantity
        self._voxels = np.zeros((0, _COLUMNS), dtype=np.float64)
        self._batches = 0

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, xyz: np.ndarray, rgb: np.ndarray) -> None:
        """Fuse points ``xyz`` [N, 3] (world frame) with colours ``rgb`` [N, 3] uint8; non-finite points are
        ignored."""
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        rgb = np.asarray(rgb).reshape(-1, 3)
        finite = np.isfinite(xyz).all(axis=1)
        xyz, rgb = xyz[finite], rgb[finite].astype(np.float64)
        if not len(xyz):
            return
        self._batches += 1
        cells = np.clip(np.floor(xyz / self.voxel_size), -_AXIS_LIMIT, _AXIS_LIMIT).astype(np.int64)
        cells += _AXIS_OFFSET
        keys = (cells[:, 0] << (2 * _AXIS_BITS)) | (cells[:, 1] << _AXIS_BITS) | cells[:, 2]
        batch_keys, inverse = np.unique(keys, return_inverse=True)
        batch = np.empty((len(batch_keys), _COLUMNS))
        batch[:, _POSITION] = _sum_by(inverse, xyz, len(batch_keys))
        batch[:, _COLOUR] = _sum_by(inverse, rgb, len(batch_keys))
        batch[:, _COUNT] = np.bincount(inverse, minlength=len(batch_keys))
        batch[:, _LAST_SEEN] = self._batches

        slots = np.searchsorted(self._keys, batch_keys)
        known = slots < len(self._keys)
        known[known] = self._keys[slots[known]] == batch_keys[known]
        hit = slots[known]
        self._voxels[hit, :_LAST_SEEN] += batch[known, :_LAST_SEEN]
        self._voxels[hit, _LAST_SEEN] = self._batches

        # New voxels go in at their sorted places: one linear merge, not a sort of the whole grid (a full
        # grid holds 500k voxels by default and the node adds a keyframe every frame).
        fresh = ~known
        merged = len(self._keys) + int(fresh.sum())
        is_fresh = np.zeros(merged, dtype=bool)
        is_fresh[slots[fresh] + np.arange(int(fresh.sum()))] = True
        keys_merged = np.empty(merged, dtype=np.int64)
        keys_merged[is_fresh], keys_merged[~is_fresh] = batch_keys[fresh], self._keys
        voxels_merged = np.empty((merged, _COLUMNS))
        voxels_merged[is_fresh], voxels_merged[~is_fresh] = batch[fresh], self._voxels
        self._keys, self._voxels = keys_merged, voxels_merged
        self._evict_oldest()

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """``(xyz [M, 3] float32, rgb [M, 3] uint8)``: one mean point per voxel."""
        counts = np.maximum(self._voxels[:, _COUNT, None], 1)
        xyz = (self._voxels[:, _POSITION] / counts).astype(np.float32)
        rgb = np.clip(np.round(self._voxels[:, _COLOUR] / counts), 0, 255).astype(np.uint8)
        return xyz, rgb

    def _evict_oldest(self) -> None:
        excess = len(self._keys) - self.max_points
        if excess <= 0:
            return
        # The ``excess`` voxels seen longest ago go: all those of the batches before ``oldest_kept``, then
        # the first ones in key order of that batch, so which voxels survive is deterministic. Linear:
        # batch numbers are counted, not sorted.
        last_seen = self._voxels[:, _LAST_SEEN].astype(np.int64)
        seen_by = np.cumsum(np.bincount(last_seen))  # [b]: voxels last seen in a batch <= b
        oldest_kept = int(np.searchsorted(seen_by, excess))
        keep = last_seen > oldest_kept
        evicted_before = int(seen_by[oldest_kept - 1]) if oldest_kept else 0
        keep[np.flatnonzero(last_seen == oldest_kept)[excess - evicted_before:]] = True
        self._keys = self._keys[keep]
        self._voxels = self._voxels[keep]


def _sum_by(groups: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """[count, C] sums of the rows of ``values`` [N, C] per group index."""
    columns = [np.bincount(groups, weights=values[:, c], minlength=count) for c in range(values.shape[1])]
    return np.stack(columns, axis=1)
