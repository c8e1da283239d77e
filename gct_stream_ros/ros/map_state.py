"""What the frames of one world frame add up to: the fused map, the trajectory and the path.

The node's worker thread adds frames while its executor thread publishes the map, saves it or
clears it, so every access goes through one lock. A clear (the ``reset`` service) also shuts the
state until the worker restarts the world frame: a step of the old world still in flight cannot
refill the map after the reset. The offline tool adds final estimates, which
may come out of frame order (window overlaps become final late): trajectory and path are kept
in frame order either way.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped

from gct_stream_ros.mapping.fused_map import FusedMap
from gct_stream_ros.mapping.ply import write_ply
from gct_stream_ros.mapping.tum import write_tum

TRAJECTORY_LIMIT = 1_000_000
"""Poses the node keeps for ``save_map`` (about 100 MB at the limit); the oldest go first."""
MAP_FILE = "map.ply"
TRAJECTORY_FILE = "trajectory.tum"


@dataclass(frozen=True)
class SavedMap:
    map_path: Path
    points: int
    trajectory_path: Path
    poses: int


def _insert_in_order(entries: deque, index: int, entry: tuple) -> None:
    """Insert ``(index, *entry)`` after every entry of an index <= ``index``; a full deque drops its oldest.

    Frames usually come in order (an append); a late one is placed from the end, where it belongs.
    """
    position = len(entries)
    while position and entries[position - 1][0] > index:
        position -= 1
    if entries.maxlen is not None and len(entries) == entries.maxlen:
        if position == 0:
            return  # older than everything kept
        entries.popleft()
        position -= 1
    entries.insert(position, (index, *entry))


class MapState:
    """The fused map, the trajectory (frame stamps and world poses) and the path messages, under one lock."""

    def __init__(self, voxel_size: float, max_points: int, path_length: int,
                 trajectory_limit: int | None = TRAJECTORY_LIMIT) -> None:
        self._lock = threading.Lock()
        self._map = FusedMap(voxel_size, max_points)
        self._trajectory: deque[tuple[int, int, np.ndarray]] = deque(maxlen=trajectory_limit)
        self._path: deque[tuple[int, PoseStamped]] = deque(maxlen=path_length)
        self._map_changed = False
        self._map_stamp_ns = 0
        self._accepting = True
        """False from ``clear_map`` until ``restart``: frames of the cleared world frame are ignored."""

    def add_frame(self, index: int, stamp_ns: int, pose: np.ndarray, pose_message: PoseStamped,
                  points: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Record a frame's world pose, its path entry and (keyframes) its points (ignored after a clear)."""
        with self._lock:
            if not self._accepting:
                return
            _insert_in_order(self._trajectory, index, (stamp_ns, pose))
            _insert_in_order(self._path, index, (pose_message,))
            if points is not None:
                self._map.add(*points)
                self._map_changed = True
                self._map_stamp_ns = stamp_ns

    def path(self) -> list[PoseStamped]:
        """The latest ``output.path.max_length`` poses, in frame order."""
        with self._lock:
            return [message for _, message in self._path]

    def changed_map(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        """``(xyz, rgb, stamp of the last fused keyframe)`` when the map changed since the last call."""
        with self._lock:
            if not self._map_changed:
                return None
            self._map_changed = False
            return *self._map.points(), self._map_stamp_ns

    @property
    def map_changed(self) -> bool:
        return self._map_changed

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self._map.points()

    def trajectory(self) -> list[tuple[int, np.ndarray]]:
        """``(stamp_ns, world pose)`` of every recorded frame, in frame order."""
        with self._lock:
            return [(stamp, pose) for _, stamp, pose in self._trajectory]

    @property
    def poses(self) -> int:
        """Frames in the trajectory."""
        return len(self._trajectory)

    @property
    def path_length(self) -> int:
        return len(self._path)

    @property
    def voxel_size(self) -> float:
        return self._map.voxel_size

    def __len__(self) -> int:
        """Points (voxels) in the fused map."""
        return len(self._map)

    def save(self, folder: Path) -> SavedMap:
        """Write ``map.ply`` and ``trajectory.tum`` into ``folder``, atomically; ``OSError`` if it cannot."""
        with self._lock:
            xyz, rgb = self._map.points()
            trajectory = [(stamp, pose) for _, stamp, pose in self._trajectory]
        map_path = write_ply(folder / MAP_FILE, xyz, rgb)
        trajectory_path = write_tum(folder / TRAJECTORY_FILE, [s for s, _ in trajectory],
                                    [p for _, p in trajectory])
        return SavedMap(map_path, len(xyz), trajectory_path, len(trajectory))

    def clear_map(self) -> None:
        """Empty map and trajectory, and ignore frames until ``restart`` (the path stays until then)."""
        with self._lock:
            self._map.clear()
            self._trajectory.clear()
            self._map_changed = True
            self._accepting = False

    def restart(self) -> None:
        """A new world frame: map, trajectory and path start again, and frames are recorded again."""
        with self._lock:
            self._accepting = True
            self._map.clear()
            self._trajectory.clear()
            self._path.clear()
            self._map_changed = True

    def reconfigure(self, voxel_size: float, max_points: int, path_length: int) -> bool:
        """Apply changed limits; True when the map had to restart empty (new voxel size or capacity)."""
        with self._lock:
            if self._path.maxlen != path_length:
                self._path = deque(self._path, maxlen=path_length)
            if (voxel_size, max_points) == (self._map.voxel_size, self._map.max_points):
                return False
            self._map = FusedMap(voxel_size, max_points)
            self._map_changed = True
            return True
