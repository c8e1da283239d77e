"""The step protocol of ``cache/base.py`` as a state machine, shared by every cache that follows it.

``begin_step``, the step's calls, ``end_step``; a DEFER step then waits for ``commit`` or
``rollback`` before the next step; a multi-frame step (phase 1) only in STORE mode on an empty
cache. Frames are numbered by their temporal index: ``frames_stored`` is the index of the next
frame, and a SKIP step's frame takes that index without keeping it. The aggregator's caches
(``stepped_cache.py``) and the camera head's cache (``model/camera_cache.py``) keep their
storage; this keeps their order.
"""

from __future__ import annotations

from gct_stream_ros.cache.base import StepMode


class StepTracker:
    """Where a cache is in the step protocol (see the module docstring)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.frames_stored = 0
        self._step: tuple[list[int], StepMode] | None = None
        self._pending_defer = False

    def next_frames(self, num_frames: int, mode: StepMode) -> list[int]:
        """The temporal indices of a step that may begin now; raises when it may not. Changes nothing."""
        if self._step is not None:
            raise RuntimeError("begin_step called twice without end_step")
        if self._pending_defer:
            raise RuntimeError("the last DEFER step must be committed or rolled back first")
        if num_frames > 1 and (mode is not StepMode.STORE or self.frames_stored > 0):
            raise ValueError("a multi-frame step (phase 1) needs STORE mode on an empty cache")
        return list(range(self.frames_stored, self.frames_stored + num_frames))

    def begin(self, frames: list[int], mode: StepMode) -> None:
        """Open the step of ``frames`` (from ``next_frames``, once the cache made room for them)."""
        if mode is not StepMode.SKIP:
            self.frames_stored += len(frames)
        self._step = (frames, mode)

    def current(self) -> tuple[list[int], StepMode]:
        """``(frames, mode)`` of the open step; raises when none is open."""
        if self._step is None:
            raise RuntimeError("attend called outside begin_step/end_step")
        return self._step

    def end(self) -> tuple[list[int], StepMode]:
        """Close the open step and return it; a DEFER step now waits for ``commit`` or ``rollback``."""
        if self._step is None:
            raise RuntimeError("end_step called without begin_step")
        step, self._step = self._step, None
        self._pending_defer = step[1] is StepMode.DEFER
        return step

    def commit(self) -> None:
        if not self._pending_defer:
            raise RuntimeError("commit without a pending DEFER step")
        self._pending_defer = False

    def rollback(self) -> int:
        """Forget the deferred frame; return its temporal index (the next frame takes it)."""
        if not self._pending_defer:
            raise RuntimeError("rollback without a pending DEFER step")
        self._pending_defer = False
        self.frames_stored -= 1
        return self.frames_stored
