"""The sizes a global-attention cache is built for, validated once, and the default bound on stored frames.

Torch-free: the engine's configuration (and so the settings table) takes its default from here.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_FRAMES = 1024
"""Stored frames whose special tokens (and camera-head entries) are kept; older non-scale frames are
recycled, so memory stays flat on endless streams (0 = unbounded, as the reference)."""


def check_max_frames(max_frames: int, scale_frames: int) -> None:
    """``max_frames`` is 0 (unbounded) or leaves room for a frame beyond the protected scale frames."""
    if max_frames < 0 or 0 < max_frames <= scale_frames:
        raise ValueError(f"max_frames ({max_frames}) must be 0 or exceed scale_frames ({scale_frames})")


@dataclass(frozen=True)
class CacheSizes:
    """What every cache of the global attention is sized by (the dense, paged and budgeted caches and the
    paged store); raises ``ValueError`` unless it describes a cache that can hold a frame per stream."""

    num_layers: int
    num_special_tokens: int
    scale_frames: int
    sliding_window: int
    max_frames: int

    def __post_init__(self) -> None:
        if min(self.num_layers, self.num_special_tokens, self.sliding_window) < 1 or self.scale_frames < 0:
            raise ValueError("layer, special-token and window sizes must be >= 1, scale_frames >= 0")
        check_max_frames(self.max_frames, self.scale_frames)


def check_head_shape(num_heads: int, head_dim: int) -> None:
    """Caches that allocate K/V storage up front need the head shape."""
    if min(num_heads, head_dim) < 1:
        raise ValueError(f"num_heads and head_dim must be >= 1, not {num_heads} and {head_dim}")


class SizedCache:
    """Reads the sizes of ``self.sizes`` as attributes (``cache.scale_frames``...)."""

    sizes: CacheSizes

    @property
    def num_layers(self) -> int:
        return self.sizes.num_layers

    @property
    def num_special_tokens(self) -> int:
        return self.sizes.num_special_tokens

    @property
    def scale_frames(self) -> int:
        return self.sizes.scale_frames

    @property
    def sliding_window(self) -> int:
        return self.sizes.sliding_window

    @property
    def max_frames(self) -> int:
        return self.sizes.max_frames


class KVStorage(SizedCache):
    """A K/V store of all layers (paged or contiguous): the bytes of a token and of what it holds."""

    num_heads: int
    head_dim: int
    dtype: object  # a torch dtype (this module stays torch-free)

    @property
    def bytes_per_token(self) -> int:
        """K and V of one token over all layers."""
        return 2 * self.num_heads * self.head_dim * self.dtype.itemsize * self.num_layers

    @property
    def bytes_allocated(self) -> int:
        return sum(tensor.numel() * tensor.element_size() for tensor in self.held_tensors())

    def held_tensors(self) -> list:
        """The storage tensors (their allocated size, not only the used part, counts)."""
        raise NotImplementedError
