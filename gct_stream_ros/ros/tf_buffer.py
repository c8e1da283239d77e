"""The TF tree read from ``/tf`` and ``/tf_static`` where ``tf2_ros`` is not importable (pip-only machines).

``TransformBuffer`` keeps the latest transform of every child frame and chains them through the tree;
``set_transform``/``set_transform_static`` and ``lookup_transform(target, source)`` behave like
tf2_ros's ``Buffer`` for the latest time, so ``tf_listener.py`` fills and reads either. What it does
not do (docs/node.md, "TF without tf2_ros"): no history and no interpolation (every lookup uses the
newest transform of each link, whatever time is asked), no extrapolation or age checks, no expiry (a
frame nobody publishes any more keeps its last transform), no waiting for a transform to appear.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.time import Time

from gct_stream_ros.ros.messages import to_nanoseconds, transform_stamped
from gct_stream_ros.ros.tf import matrix_from_transform

MAX_CHAIN_LENGTH = 1000
"""Links followed from a frame towards its root, as tf2 does: a loop in a broken tree ends there."""


class TransformLookupError(LookupError):
    """No chain of known transforms connects the two frames."""


@dataclass(frozen=True)
class _Link:
    """One child frame's transform: its coordinates into the parent's."""

    parent: str
    matrix: np.ndarray
    stamp_ns: int
    static: bool


class TransformBuffer:
    """The latest transform of each frame, chained on request; safe to fill and read from two threads."""

    def __init__(self) -> None:
        self._links: dict[str, _Link] = {}
        self._lock = threading.Lock()

    def set_transform(self, transform: TransformStamped, authority: str) -> None:
        """Keep ``transform`` as its child's link (replacing the previous one, a new parent included);
        ``authority`` is taken for tf2_ros's signature and not kept."""
        self._keep(transform, static=False)

    def set_transform_static(self, transform: TransformStamped, authority: str) -> None:
        """``set_transform`` for a transform from ``/tf_static``: its stamp never limits a lookup's."""
        self._keep(transform, static=True)

    def _keep(self, transform: TransformStamped, static: bool) -> None:
        link = _Link(transform.header.frame_id, matrix_from_transform(transform),
                     to_nanoseconds(transform.header.stamp), static)
        with self._lock:
            self._links[transform.child_frame_id] = link

    def lookup_transform(self, target_frame: str, source_frame: str,
                         time: Time | None = None) -> TransformStamped:
        """``target_frame -> source_frame`` (source coordinates into the target frame) from the newest links.

        ``time`` is accepted for tf2_ros's signature and ignored (no history). The stamp is the oldest
        of the dynamic links' stamps on the chain (0 when all are static), as tf2 reports the latest
        common time. Raises ``TransformLookupError`` when the frames are not connected.
        """
        with self._lock:
            source_chain = self._chain(source_frame)
            target_chain = self._chain(target_frame)
        for ancestor, (target_in_ancestor, target_stamps) in target_chain.items():
            if ancestor in source_chain:
                source_in_ancestor, source_stamps = source_chain[ancestor]
                stamps = source_stamps + target_stamps
                return transform_stamped(np.linalg.inv(target_in_ancestor) @ source_in_ancestor,
                                         min(stamps, default=0), target_frame, source_frame)
        raise TransformLookupError(f"no transform between {target_frame!r} and {source_frame!r} in "
                                f"{len(self._links)} known links")

    def _chain(self, frame: str) -> dict[str, tuple[np.ndarray, list[int]]]:
        """Every ancestor of ``frame`` (itself included), nearest first: frame coordinates in it and the
        stamps of the dynamic links on the way."""
        chain = {frame: (np.eye(4), [])}
        matrix, stamps = np.eye(4), []
        for _ in range(MAX_CHAIN_LENGTH):
            link = self._links.get(frame)
            if link is None or link.parent in chain:
                break
            matrix = link.matrix @ matrix
            stamps = stamps if link.static else [*stamps, link.stamp_ns]
            frame = link.parent
            chain[frame] = (matrix, stamps)
        return chain
