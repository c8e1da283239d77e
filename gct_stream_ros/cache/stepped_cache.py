"""The call protocol of ``GlobalKVCache`` steps, shared by the paged and the budgeted caches.

It enforces the order of ``cache/base.py`` through a ``StepTracker`` (``step_tracker.py``, which
also keeps the temporal counter) and checks tensor shapes. Subclasses only store and attend,
through the ``_clear``/``_begin``/``_attend``/``_end``/``_commit``/``_rollback`` hooks.
"""

from __future__ import annotations

import abc

import torch

from gct_stream_ros.cache.base import GlobalKVCache, StepMode
from gct_stream_ros.cache.step_tracker import StepTracker


class SteppedKVCache(GlobalKVCache):
    """Step bookkeeping; frames are numbered by their temporal index (see the module docstring)."""

    def __init__(self) -> None:
        self._steps = StepTracker()
        self._step_tokens_per_frame = 0

    def reset(self) -> None:
        self._steps.reset()
        self._clear()

    @property
    def frames_stored(self) -> int:
        return self._steps.frames_stored

    def begin_step(self, num_frames: int, tokens_per_frame: int, mode: StepMode) -> None:
        frames = self._steps.next_frames(num_frames, mode)
        if num_frames < 1 or tokens_per_frame <= self.num_special_tokens:
            raise ValueError(f"bad step size: {num_frames} frames of {tokens_per_frame} tokens")
        self._begin(frames, tokens_per_frame - self.num_special_tokens, mode)
        self._steps.begin(frames, mode)
        self._step_tokens_per_frame = tokens_per_frame

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        frames, mode = self._steps.current()
        tokens_per_frame = self._step_tokens_per_frame
        if q.shape[:2] != (len(frames), tokens_per_frame) or k.shape != v.shape or k.shape[:2] != q.shape[:2]:
            raise ValueError(f"q/k/v shapes {tuple(q.shape)}/{tuple(k.shape)}/{tuple(v.shape)} do not match "
                             f"the step ({len(frames)} frames of {tokens_per_frame} tokens)")
        return self._attend(layer, frames, mode, q, k, v)

    def end_step(self) -> None:
        self._end(*self._steps.end())

    def commit(self) -> None:
        self._steps.commit()
        self._commit()

    def rollback(self) -> None:
        self._rollback(self._steps.rollback())

    @abc.abstractmethod
    def _clear(self) -> None:
        """Empty the cache for a new sequence (``reset``); allocated storage may be kept."""

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
