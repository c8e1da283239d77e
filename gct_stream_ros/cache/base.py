"""The contract between the aggregator's global attention and any KV cache.

One cache object serves all global-attention layers of the aggregator. A forward pass of the
model is one *step*: ``begin_step`` once, then ``attend`` once per global layer in order
0..L-1, then ``end_step``. Every implementation (dense, paged + gather, paged + FlashInfer, and
the eviction policies built on them) follows the same semantics, so they can be swapped
without touching the model:

* ``StepMode.STORE`` (keyframe): the step's frames are appended, the eviction policy runs, then
  the queries attend over the visible set (so a keyframe sees W-1 earlier window frames plus
  itself with the sliding window policy).
* ``StepMode.SKIP`` (non-keyframe): the queries attend over the visible set plus the step's own
  keys; nothing is stored and the temporal index does not advance.
* ``StepMode.DEFER`` (flow keyframes): append with eviction suppressed, attend (the frame sees W
  earlier window frames plus itself), and wait for ``commit()`` (run the deferred eviction: the
  frame becomes a keyframe) or ``rollback()`` (remove every trace of the frame).

A step with more than one frame is phase 1 (the scale frames) and is only allowed on an empty
cache in STORE mode: its frames attend to each other bidirectionally, then they are stored.

Canonical visible key order. Attention is unmasked, so the order of keys does not change the
math, but it changes float summation order. Every implementation gathers keys in the same
order so that they agree bit for bit in fp32:
    [patch tokens of the protected scale frames, oldest first]
  + [patch tokens of the other retained frames, oldest first; the current frame last]
  + [special tokens of every retained frame, oldest first; the current frame last]
Phase 1 attends over the step's own tokens in their natural order (frame by frame, specials
then patches) and nothing else.

Tensor layout: q, k, v and the output are ``[S, P, H, D]`` (frames of the step, tokens per
frame, heads, head dim), keys already qk-normalised and rotated (RoPE is applied before
caching, so cached keys carry their own absolute positions). The first ``num_special_tokens``
tokens of every frame are its special tokens (camera, registers, scale).
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field

import torch


class StepMode(enum.Enum):
    STORE = "store"
    SKIP = "skip"
    DEFER = "defer"


@dataclass
class CacheStats:
    """What a cache holds after the last step (all counts per global layer where noted)."""

    frames_stored: int
    """Frames stored since the last reset (the temporal index of the next frame)."""
    frames_evicted: int
    """Frames whose patch tokens were evicted since the last reset."""
    tokens_per_layer: list[int] = field(default_factory=list)
    """Cached tokens of each global layer (what the next query would see, itself excluded)."""
    bytes_allocated: int = 0
    """Bytes of K/V storage held by the cache (allocated pools, not only the used part)."""
    bytes_used: int = 0
    """Bytes of K/V actually occupied by cached tokens."""
    pages_in_use: int = 0
    """Pages referenced by the page tables (0 for unpaged caches)."""
    protected_tokens: int = 0
    """Tokens that no policy may evict (scale frames, anchors, kept specials), per layer."""
    policy: str = "sliding_window"
    specials_dropped: int = 0
    """Frames whose special tokens were recycled by the ``max_frames`` bound since the last reset."""
    budget_tokens_per_layer: list[int] = field(default_factory=list)
    """Token budget of each global layer under a budgeted policy (empty when unbudgeted)."""
    camera_head_bytes: int = 0
    """Bytes of K/V storage held by the camera head's own cache (filled in by the model)."""

    @property
    def tokens_min(self) -> int:
        return min(self.tokens_per_layer, default=0)

    @property
    def tokens_max(self) -> int:
        return max(self.tokens_per_layer, default=0)


class GlobalKVCache(abc.ABC):
    """KV cache shared by the aggregator's global-attention layers (see the module docstring)."""

    num_layers: int
    num_special_tokens: int
    steady_graph_keys: int = 1
    """The ``graph_key`` s of one kind of steady step (STORE or SKIP) that the cache cycles through: more
    than one where it evicts every few steps (``BudgetedKVCache.evict_every``)."""

    @abc.abstractmethod
    def begin_step(self, num_frames: int, tokens_per_frame: int, mode: StepMode) -> None:
        """Start a step of ``num_frames`` frames of ``tokens_per_frame`` tokens each."""

    @abc.abstractmethod
    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store (per the step's mode) and attend for one global layer: ``[S,P,H,D] -> [S,P,H,D]``."""

    @abc.abstractmethod
    def end_step(self) -> None:
        """Finish the step; after a DEFER step the cache waits for ``commit`` or ``rollback``."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Keep the frame of the last DEFER step and run the eviction that was deferred."""

    @abc.abstractmethod
    def rollback(self) -> None:
        """Remove every trace of the frame of the last DEFER step (K/V, specials, counters)."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything (new sequence or new window); the temporal index restarts at 0."""

    @property
    @abc.abstractmethod
    def frames_stored(self) -> int:
        """Frames stored since the last reset: the temporal (3D RoPE) index of the next frame."""

    def graph_key(self) -> tuple[object, ...] | None:
        """Called inside a step (after ``begin_step``): equal keys mean the step's ``attend`` calls run
        the same kernels on the same storage and read everything that differs between the steps
        from device tensors, so one CUDA graph can replay them; ``None``: this step cannot be
        replayed (the default). The first element identifies the storage: graphs made for another
        one are released (they would keep it allocated)."""
        return None

    def compile_regions(self, **options: object) -> None:
        """``torch.compile`` (with the model's ``options``) the cache's own fixed-shape device work, when
        it has some worth compiling; the default has none. ``GCTModel.compile_regions`` calls it."""
        del options

    @abc.abstractmethod
    def stats(self) -> CacheStats:
        """Counters and sizes for logs, diagnostics and the offline stats file."""
