"""DINOv2 ViT with register tokens: the patch embedding of the aggregator.

Only the normalised patch tokens leave the backbone; its CLS and register tokens are internal.
Images of another size than the square ``img_size`` get the position-embedding grid resized
with antialiased bicubic interpolation (in fp32), as the pretrained model expects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gct_stream_ros.model.block import Block


class PatchEmbed(nn.Module):
    """Non-overlapping patchify convolution: ``[B, 3, H, W] -> [B, h*w, C]`` (row-major patches)."""

    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class DinoV2(nn.Module):
    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float, num_register_tokens: int):
        super().__init__()
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        # only used for masked-image training; part of the checkpoint
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, norm_eps=1e-6) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        # resized position embeddings per grid size, kept while ``pos_embed`` is unchanged
        self._resized: dict[tuple[int, ...], torch.Tensor] = {}

    def forward(self, images: torch.Tensor, position: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised images ``[B, 3, H, W]`` -> patch tokens ``[B, h*w, C]``; ``position``: the
        ``position_embedding`` of their grid when the caller has it (a compiled caller passes it in,
        so that it is not resized again at every call)."""
        grid_h, grid_w = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        patches = self.patch_embed(images)  # [B, h*w, C]
        x = torch.cat((self.cls_token.expand(len(patches), -1, -1), patches), dim=1)
        position = self.position_embedding(grid_h, grid_w) if position is None else position
        x = x + position.to(x.dtype)
        registers = self.register_tokens.expand(len(x), -1, -1)
        x = torch.cat((x[:, :1], registers, x[:, 1:]), dim=1)  # [B, 1 + R + h*w, C]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + registers.shape[1]:]

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``[1, 1 + h*w, C]``: the CLS embedding, then the patch grid resized to (h, w) (made once per
        grid size and ``pos_embed`` value)."""
        if grid_h == grid_w == self.grid:
            return self.pos_embed
        key = (grid_h, grid_w, self.pos_embed.data_ptr(), self.pos_embed._version, self.pos_embed.dtype)
        if key not in self._resized:
            self._resized = {key: self._resize_position_embedding(grid_h, grid_w)}
        return self._resized[key]

    def _resize_position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        pos_embed = self.pos_embed.detach().float()
        grid = pos_embed[:, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)  # [1, C, g, g]
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", antialias=True, align_corners=False)
        return torch.cat((pos_embed[:, :1], grid.flatten(2).transpose(1, 2)), dim=1)
