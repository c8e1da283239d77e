"""The call protocol of ``GlobalKVCache`` steps, shared by the paged and the budgeted caches.

It enforces the order of ``cache/base.py`` (``begin_step``, ``attend`` per layer, ``end_step``;
a DEFER step resolved by ``commit``/``rollback`` before the next step; phase 1 only in STORE
mode on an empty cache), checks tensor shapes and keeps the temporal counter. Subclasses only
store and attend, through the ``_begin``/``_attend``/``_end``/``_commit``/``_rollback`` hooks.
"""

from __future__ import annotations

import abc

import torch

from gct_stream_ros.cache.base import GlobalKVCache, StepMode


class SteppedKVCache(GlobalKVCache):
    """Step bookkeeping; frames are numbered by their temporal index (see the module docstring)."""

    def _reset_steps(self) -> None:
        self._frames_stored = 0
        self._step: tuple[list[int], int, StepMode] | None = None
        self._pending_defer = False

    @property
    def frames_stored(self) -> int:
        return self._frames_stored

    def begin_step(self, num_frames: int, tokens_per_frame: int, mode: StepMode) -> None:
        if self._step is not None:
            raise RuntimeError("begin_step called twice without end_step")
        if self._pending_defer:
            raise RuntimeError("the last DEFER step must be committed or rolled back first")
        if num_frames < 1 or tokens_per_frame <= self.num_special_tokens:
            raise ValueError(f"bad step size: {num_frames} frames of {tokens_per_frame} tokens")
        if num_frames > 1 and (mode is not StepMode.STORE or self._frames_stored > 0):
            raise ValueError("a multi-frame step (phase 1) needs STORE mode on an empty cache")
        frames = list(range(self._frames_stored, self._frames_stored + num_frames))
        self._begin(frames, tokens_per_frame - self.num_special_tokens, mode)
        if mode is not StepMode.SKIP:
            self._frames_stored += num_frames
        self._step = (frames, tokens_per_frame, mode)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self._step is None:
            raise RuntimeError("attend called outside begin_step/end_step")
        frames, tokens_per_frame, mode = self._step
        if q.shape[:2] != (len(frames), tokens_per_frame) or k.shape != v.shape or k.shape[:2] != q.shape[:2]:
            raise ValueError(f"q/k/v shapes {tuple(q.shape)}/{tuple(k.shape)}/{tuple(v.shape)} do not match "
                             f"the step ({len(frames)} frames of {tokens_per_frame} tokens)")
        return self._attend(layer, frames, mode, q, k, v)

    def end_step(self) -> None:
        if self._step is None:
            raise RuntimeError("end_step called without begin_step")
        frames, _, mode = self._step
        self._step = None
        self._pending_defer = mode is StepMode.DEFER
        self._end(frames, mode)

    def commit(self) -> None:
        if not self._pending_defer:
            raise RuntimeError("commit without a pending DEFER step")
        self._pending_defer = False
        self._commit()

    def rollback(self) -> None:
        if not self._pending_defer:
            raise RuntimeError("rollback without a pending DEFER step")
        self._pending_defer = False
        self._frames_stored -= 1
        self._rollback(self._frames_stored)

    @abc.abstractmethod
    def _begin(self, frames: list[int], patches_per_frame: int, mode: StepMode) -> None:
        """Reserve/evict for the step's ``frames`` (numbered by temporal index) before any attend."""

    @abc.abstractmethod
    def _attend(self, layer: int, frames: list[int], mode: StepMode, q: torch.Tensor, k: torch.Tensor,
                v: torch.Tensor) -> torch.Tensor:
        """``attend`` with checked ``[S, P, H, D]`` tensors."""

    @abc.abstractmethod
    def _end(self, frames: list[int], mode: StepMode) -> None:
        """Every layer attended; a DEFER step now waits for ``_commit`` or ``_rollback``."""

    @abc.abstractmethod
    def _commit(self) -> None:
        """Run what the DEFER step postponed."""

    @abc.abstractmethod
    def _rollback(self, frame: int) -> None:
        """Remove every trace of the deferred ``frame``."""
