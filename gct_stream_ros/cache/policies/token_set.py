"""A layer's cached tokens in a dense layout with their provenance and attention-mass accumulators."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenSet:
    """Tokens in canonical order (oldest frame first); every field is aligned on dim 0."""

    keys: torch.Tensor  # [N, H, D]
    values: torch.Tensor  # [N, H, D]
    frames: torch.Tensor  # [N] long, temporal index of the token's frame
    mass: torch.Tensor  # [N] fp32, attention mass accumulated over the steps that scored it
    exposure: torch.Tensor  # [N] fp32, number of those steps

    @classmethod
    def empty(cls, num_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device) -> TokenSet:
        return cls.of(torch.empty(0, num_heads, head_dim, dtype=dtype, device=device),
                      torch.empty(0, num_heads, head_dim, dtype=dtype, device=device),
                      torch.empty(0, dtype=torch.long, device=device))

    @classmethod
    def of(cls, keys: torch.Tensor, values: torch.Tensor, frames: torch.Tensor) -> TokenSet:
        """New tokens, never scored."""
        zeros = torch.zeros(len(frames), dtype=torch.float32, device=keys.device)
        return cls(keys, values, frames, zeros, zeros.clone())

    def __len__(self) -> int:
        return self.frames.numel()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.keys, self.values))

    def __add__(self, other: TokenSet) -> TokenSet:
        return TokenSet(*(torch.cat([mine, theirs.to(mine.dtype)])
                          for mine, theirs in zip(self._fields(), other._fields())))

    def select(self, keep: torch.Tensor) -> TokenSet:
        """The tokens where the boolean ``keep`` ``[N]`` is set, order preserved."""
        return TokenSet(*(field[keep] for field in self._fields()))

    def take(self, positions: torch.Tensor | None) -> TokenSet:
        """The tokens at ``positions`` ``[M]`` (None: all of them, no copy)."""
        if positions is None:
            return self
        return TokenSet(*(field.index_select(0, positions) for field in self._fields()))

    def without_frames(self, frames: list[int]) -> TokenSet:
        if not frames:
            return self
        return self.select(~torch.isin(self.frames, torch.tensor(frames, device=self.frames.device)))

    def scored(self, step_mass: torch.Tensor) -> TokenSet:
        """Add one step's attention mass ``[N]`` to every token."""
        return TokenSet(self.keys, self.values, self.frames, self.mass + step_mass, self.exposure + 1)

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return self.keys, self.values, self.frames, self.mass, self.exposure
