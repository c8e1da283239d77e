"""Which slot of a densely packed, per-frame slot space each retained frame occupies.

A *stream* of the paged store (the patch stream, the special stream) gives every retained frame
one fixed-size unit of consecutive token slots. The first ``protected_frames`` frames appended
after a reset are protected (the scale frames); the others form a FIFO that keeps at most
``max_evictable`` frames (``None``: unbounded).

The slot space is kept *dense*: the retained frames always occupy slots ``0 .. n-1``. When a
frame leaves, the frame in the last slot moves into the hole (a ``SlotMove``), so a stream is
always one contiguous token range and only its last page can be partial, which is what a
FlashInfer page table can describe. Attention is unmasked and RoPE is baked into the keys, so
the physical order does not matter to the math; the canonical key order of ``cache/base.py``
(oldest first) is kept in the bookkeeping instead (``ordered_slots``) for the gather path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SlotMove:
    """``frame`` left slot ``source`` for slot ``target`` (the hole of an evicted frame)."""

    frame: int
    source: int
    target: int


class FrameSlots:
    """Dense slot bookkeeping of one stream (see the module docstring)."""

    def __init__(self, protected_frames: int, max_evictable: int | None):
        if protected_frames < 0 or (max_evictable is not None and max_evictable < 0):
            raise ValueError("protected_frames and max_evictable must be >= 0")
        self.protected_frames = protected_frames
        self.max_evictable = max_evictable
        self.reset()

    def reset(self) -> None:
        self._protected: list[int] = []
        self._evictable: deque[int] = deque()
        self._frame_at: list[int] = []  # slot -> frame
        self._slot_of: dict[int, int] = {}  # frame -> slot

    def __len__(self) -> int:
        return len(self._frame_at)

    def __contains__(self, frame: int) -> bool:
        return frame in self._slot_of

    @property
    def num_protected(self) -> int:
        return len(self._protected)

    def slot(self, frame: int) -> int:
        return self._slot_of[frame]

    def append(self, frame: int) -> int:
        """Give ``frame`` the next slot (protected while fewer than ``protected_frames`` are)."""
        if frame in self._slot_of:
            raise ValueError(f"frame {frame} is already in the stream")
        group = self._protected if len(self._protected) < self.protected_frames else self._evictable
        group.append(frame)
        self._slot_of[frame] = len(self._frame_at)
        self._frame_at.append(frame)
        return self._slot_of[frame]

    def over_capacity(self) -> list[int]:
        """The oldest evictable frames beyond ``max_evictable`` (not removed yet), oldest first."""
        if self.max_evictable is None:
            return []
        excess = len(self._evictable) - self.max_evictable
        return [self._evictable[i] for i in range(max(excess, 0))]

    def discard(self, frame: int) -> SlotMove | None:
        """Remove ``frame``; the frame of the last slot fills its hole (returned as a move)."""
        hole = self._slot_of.pop(frame)
        if frame in self._protected:
            self._protected.remove(frame)
        else:
            self._evictable.remove(frame)
        last = self._frame_at.pop()
        if last == frame:
            return None
        self._frame_at[hole] = last
        self._slot_of[last] = hole
        return SlotMove(frame=last, source=len(self._frame_at), target=hole)

    def pop_last(self, frame: int) -> None:
        """Undo the latest ``append`` of ``frame`` (it must still hold the last slot)."""
        if not self._frame_at or self._frame_at[-1] != frame:
            raise ValueError(f"frame {frame} is not the last appended frame")
        self.discard(frame)

    def ordered_frames(self) -> list[int]:
        """Retained frames in canonical order: protected first, then the FIFO, oldest first."""
        return self._protected + list(self._evictable)

    def ordered_slots(self) -> list[int]:
        return [self._slot_of[frame] for frame in self.ordered_frames()]


def evict_streams(patches: FrameSlots, specials: FrameSlots,
                  discard: Callable[[FrameSlots, int], None]) -> tuple[int, int]:
    """The sliding window on ``patches``, then the ``max_frames`` bound on ``specials``, which drops a
    frame whole (its patches too while they are still in the window); ``discard(slots, frame)``
    removes one frame from one stream. Returns (frames whose patches left, frames whose specials left).
    """
    evicted = dropped = 0
    for frame in patches.over_capacity():
        discard(patches, frame)
        evicted += 1
    for frame in specials.over_capacity():
        discard(specials, frame)
        dropped += 1
        if frame in patches:
            discard(patches, frame)
            evicted += 1
    return evicted, dropped
