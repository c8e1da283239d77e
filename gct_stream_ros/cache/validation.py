"""Size checks shared by the cache implementations."""

from __future__ import annotations


def check_sizes(num_layers: int, num_heads: int, head_dim: int, num_special_tokens: int, scale_frames: int,
                sliding_window: int, max_frames: int) -> None:
    """Raise unless the sizes describe a cache that can hold at least one frame per stream."""
    if min(num_layers, num_heads, head_dim, num_special_tokens, sliding_window) < 1 or scale_frames < 0:
        raise ValueError("layer, head, dim, special-token and window sizes must be >= 1, scale_frames >= 0")
    if max_frames < 0 or 0 < max_frames <= scale_frames:
        raise ValueError(f"max_frames ({max_frames}) must be 0 or exceed scale_frames ({scale_frames})")
