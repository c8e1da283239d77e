"""The special tokens of one budgeted layer, in storage allocated once per cache.

Every retained frame keeps its special tokens (camera, registers, scale), oldest first as the
canonical key order wants, until the ``max_frames`` rule recycles the oldest non-scale frame. So
a layer never holds more than ``max_frames + 1`` frames' specials (the +1: a stored frame is
appended before the rule runs), and with ``max_frames > 0`` that storage is allocated once:
memory does not creep up over the first ``max_frames`` frames of a stream. With
``max_frames = 0`` (unbounded, as the reference) it doubles when full.

Which frame sits where is kept on the host (``frames``), so appending and removing a frame
never waits for the device.
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.policies.token_set import TokenSet

UNBOUNDED_START_FRAMES = 64
"""Frames the storage first holds when ``max_frames`` is 0 (then doubled as needed)."""


class SpecialTokens:
    """``tokens_per_frame`` special tokens per retained frame (see the module docstring)."""

    def __init__(self, num_heads: int, head_dim: int, tokens_per_frame: int, max_frames: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.tokens_per_frame = tokens_per_frame
        self.bounded = max_frames > 0
        capacity = tokens_per_frame * (max_frames + 1 if self.bounded else UNBOUNDED_START_FRAMES)
        self._keys = torch.empty(capacity, num_heads, head_dim, dtype=dtype, device=device)
        self._values = torch.empty_like(self._keys)
        self._frame_ids = torch.empty(capacity, dtype=torch.long, device=device)
        self._mass = torch.empty(capacity, dtype=torch.float32, device=device)
        self._exposure = torch.empty_like(self._mass)
        self.frames: list[int] = []
        """The retained frames, in storage order (oldest first)."""

    def __len__(self) -> int:
        return len(self.frames) * self.tokens_per_frame

    @property
    def capacity(self) -> int:
        return self._keys.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of K/V storage allocated."""
        return 2 * self._keys.numel() * self._keys.element_size()

    @property
    def tokens(self) -> TokenSet:
        """The retained specials (views of the storage: valid until the next change)."""
        used = len(self)
        return TokenSet(self._keys[:used], self._values[:used], self._frame_ids[:used], self._mass[:used],
                        self._exposure[:used])

    def append(self, frames: list[int], tokens: TokenSet) -> None:
        """Store the specials of ``frames`` (``tokens_per_frame`` each, frame by frame, never scored)."""
        start, end = len(self), len(self) + len(tokens)
        if end > self.capacity:
            if self.bounded:
                raise RuntimeError(f"{len(self.frames) + len(frames)} frames' specials exceed the storage "
                                   f"of max_frames + 1 = {self.capacity // self.tokens_per_frame} frames")
            self._grow(max(end, 2 * self.capacity))
        self._keys[start:end] = tokens.keys
        self._values[start:end] = tokens.values
        self._frame_ids[start:end] = tokens.frames
        self._mass[start:end] = 0.0
        self._exposure[start:end] = 0.0
        self.frames += frames

    def remove(self, frames: list[int]) -> None:
        """Forget the specials of ``frames``; the later frames move up, order kept."""
        for frame in frames:
            if frame not in self.frames:
                continue
            position = self.frames.index(frame)
            start, end, size = position * self.tokens_per_frame, len(self), self.tokens_per_frame
            for storage in self._storages():
                # the source overlaps the destination: copy it out first
                storage[start:end - size] = storage[start + size:end].clone()
            del self.frames[position]

    def clear(self) -> None:
        """Forget every frame; the storage stays allocated."""
        self.frames = []

    def add_mass(self, step_mass: torch.Tensor) -> None:
        """Add one step's attention mass ``[len(self)]`` to every retained special token."""
        used = len(self)
        self._mass[:used] += step_mass
        self._exposure[:used] += 1

    def _storages(self) -> tuple[torch.Tensor, ...]:
        return self._keys, self._values, self._frame_ids, self._mass, self._exposure

    def _grow(self, capacity: int) -> None:
        used = len(self)
        grown = []
        for storage in self._storages():
            larger = storage.new_empty((capacity, *storage.shape[1:]))
            larger[:used] = storage[:used]
            grown.append(larger)
        self._keys, self._values, self._frame_ids, self._mass, self._exposure = grown
