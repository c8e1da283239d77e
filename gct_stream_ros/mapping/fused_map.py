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
        self._position_sums = np.zeros((0, 3), dtype=np.float64)
        self._colour_sums = np.zeros((0, 3), dtype=np.float64)
        self._counts = np.zeros(0, dtype=np.int64)
        self._last_seen = np.zeros(0, dtype=np.int64)
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
        batch_positions = _sum_by(inverse, xyz, len(batch_keys))
        batch_colours = _sum_by(inverse, rgb, len(batch_keys))
        batch_counts = np.bincount(inverse, minlength=len(batch_keys))

        slots = np.searchsorted(self._keys, batch_keys)
        known = slots < len(self._keys)
        known[known] = self._keys[slots[known]] == batch_keys[known]
        hit = slots[known]
        self._position_sums[hit] += batch_positions[known]
        self._colour_sums[hit] += batch_colours[known]
        self._counts[hit] += batch_counts[known]
        self._last_seen[hit] = self._batches

        fresh = ~known
        keys_all = np.concatenate([self._keys, batch_keys[fresh]])
        order = np.argsort(keys_all, kind="stable")
        self._keys = keys_all[order]
        self._position_sums = np.concatenate([self._position_sums, batch_positions[fresh]])[order]
        self._colour_sums = np.concatenate([self._colour_sums, batch_colours[fresh]])[order]
        self._counts = np.concatenate([self._counts, batch_counts[fresh]])[order]
        self._last_seen = np.concatenate([self._last_seen, np.full(fresh.sum(), self._batches)])[order]
        self._evict_oldest()

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """``(xyz [M, 3] float32, rgb [M, 3] uint8)``: one mean point per voxel."""
        counts = self._counts[:, None].astype(np.float64)
        xyz = (self._position_sums / np.maximum(counts, 1)).astype(np.float32)
        rgb = np.clip(np.round(self._colour_sums / np.maximum(counts, 1)), 0, 255).astype(np.uint8)
        return xyz, rgb

    def _evict_oldest(self) -> None:
        excess = len(self._keys) - self.max_points
        if excess <= 0:
            return
        # Stable on the (sorted) key order, so which voxels of one batch survive is deterministic.
        keep = np.sort(np.argsort(self._last_seen, kind="stable")[excess:])
        self._keys = self._keys[keep]
        self._position_sums = self._position_sums[keep]
        self._colour_sums = self._colour_sums[keep]
        self._counts = self._counts[keep]
        self._last_seen = self._last_seen[keep]


def _sum_by(groups: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """[count, C] sums of the rows of ``values`` [N, C] per group index."""
    columns = [np.bincount(groups, weights=values[:, c], minlength=count) for c in range(values.shape[1])]
    return np.stack(columns, axis=1)
