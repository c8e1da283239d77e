"""The shape of the TF tree the node sees: who is whose parent, and which of our transforms would give a
frame a second parent.

tf2 refuses a frame with two parents only by flickering between them; a node that publishes
``map -> camera_color_optical_frame`` next to a driver's ``camera_link -> camera_color_optical_frame``
breaks the robot's tree the moment it starts. ``TfTree`` records the edges ``tf_listener.py`` hears
on ``/tf`` and ``/tf_static`` (an edge we publish ourselves is never a conflict) and tells the node
which of its transforms to hold back. It also finds the root of a frame's tree, which is
what the node attaches ``odom`` to when ``frames.base`` is not linked to the camera
(``docs/node.md``, "Frames and TF").
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

Edge = tuple[str, str]
"""``(parent, child)``."""


class TfTree:
    """Parent of every frame heard of, by whom it was heard (ours or others'); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parents: dict[str, set[str]] = {}
        """Parents other publishers gave each child (more than one is a broken tree already)."""
        self._reported: set[Edge] = set()
        self._ours: set[Edge] = set()
        """Every edge this node has published: heard back on ``/tf``, they are not others' parents."""

    def claim(self, edges: Iterable[Edge]) -> None:
        """Mark ``edges`` as published by this node (before sending them)."""
        with self._lock:
            self._ours.update(edges)

    def add(self, edges: Iterable[Edge]) -> None:
        """Record ``edges`` heard on ``/tf`` or ``/tf_static``."""
        with self._lock:
            for parent, child in edges:
                if (parent, child) not in self._ours and parent != child:
                    self._parents.setdefault(child, set()).add(parent)

    def parents_of(self, child: str) -> set[str]:
        """Parents other publishers give ``child``."""
        with self._lock:
            return set(self._parents.get(child, ()))

    def other_parent(self, parent: str, child: str) -> str | None:
        """A parent other than ``parent`` that ``child`` already has, or None."""
        others = sorted(self.parents_of(child) - {parent})
        return others[0] if others else None

    def report_once(self, edge: Edge) -> bool:
        """True the first time it is asked about ``edge``: a conflict is said once."""
        with self._lock:
            first = edge not in self._reported
            self._reported.add(edge)
        return first

    def root_of(self, frame: str) -> str:
        """The top of ``frame``'s tree as others publish it (``frame`` itself when nobody gives it a parent);
        a loop stops where it closes."""
        seen = {frame}
        current = frame
        while True:
            parents = self.parents_of(current)
            if not parents:
                return current
            parent = sorted(parents)[0]
            if parent in seen:
                return current
            seen.add(parent)
            current = parent
