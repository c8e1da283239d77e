"""The camera mount: which frame ``odom -> ...`` tracks, and where the camera sits on it, from TF.

On a robot ``frames.base`` is linked to the camera by the robot description (URDF or static
publishers), and the node tracks the base. The mount may not be on TF yet when the first pose is
ready (the description comes up at the same time), so the node waits for it up to
``tf.mount_timeout`` seconds, once. Past that the camera is assumed to be its own base: the node
tracks the root of the camera's TF tree instead (the driver's ``camera_link``, or the camera frame
itself when nothing publishes its frames), and keeps looking for the mount at every frame; when it
appears the node switches to it. Nothing here publishes a mount (it belongs to the robot description).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

from gct_stream_ros.ros.tf_tree import TfTree

POLL_PERIOD_S = 0.02
"""How often the wait looks at TF again."""

Lookup = Callable[[str, str], "np.ndarray | None"]
"""``(target, source)`` -> 4x4 source coordinates into target (tf2's ``lookup_transform`` order), or None."""


@dataclass(frozen=True)
class Mount:
    """The frame the node tracks and the camera's pose in it."""

    tracked_frame: str
    camera_frame: str
    tracked_from_camera: np.ndarray | None
    """4x4; None when the tracked frame is the camera frame itself."""
    found: bool
    """True when ``tracked_frame`` is the configured base (no assumption made)."""


class MountResolver:
    """Finds the mount, waiting for it the first time (until ``cancel``), then retrying without waiting."""

    def __init__(self, lookup: Lookup, tree: TfTree, timeout_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._lookup, self._tree = lookup, tree
        self.timeout_s = timeout_s
        self._clock, self._sleep = clock, sleep
        self._deadline: float | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop waiting (the node is shutting down): ``resolve`` answers at once from now on."""
        self._cancelled.set()

    @property
    def waited(self) -> bool:
        """True once the wait is over (found or timed out): later calls never wait."""
        return self._deadline is not None and self._clock() >= self._deadline

    def resolve(self, base_frame: str, camera_frame: str, own_frames: Collection[str] = ()) -> Mount:
        """The base and its mount when TF links them (waiting up to the timeout on the first call); otherwise
        the root of the camera's tree as it stands, unless that root is one of ``own_frames`` (the node's
        map and odom: tracking one of them would close a loop), where the camera itself is tracked."""
        if self._deadline is None:
            self._deadline = self._clock() + self.timeout_s
        while True:
            mount = self._base_mount(base_frame, camera_frame)
            if mount is not None:
                self._deadline = min(self._deadline, self._clock())
                return mount
            if self._clock() >= self._deadline or self._cancelled.is_set():
                return self._assumed(camera_frame, own_frames)
            self._sleep(POLL_PERIOD_S)

    def _base_mount(self, base_frame: str, camera_frame: str) -> Mount | None:
        if base_frame == camera_frame:
            return Mount(camera_frame, camera_frame, None, True)
        matrix = self._lookup(base_frame, camera_frame)
        return None if matrix is None else Mount(base_frame, camera_frame, matrix, True)

    def _assumed(self, camera_frame: str, own_frames: Collection[str]) -> Mount:
        root = self._tree.root_of(camera_frame)
        if root != camera_frame and root not in own_frames:
            matrix = self._lookup(root, camera_frame)
            if matrix is not None:
                return Mount(root, camera_frame, matrix, False)
        return Mount(camera_frame, camera_frame, None, False)
