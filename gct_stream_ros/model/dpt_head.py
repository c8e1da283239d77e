"""DPT head: dense per-pixel predictions (depth or world points) from four aggregator layers.

The patch tokens of the four selected layers are projected to a feature pyramid (x4, x2, x1,
/2), fused coarse to fine by RefineNet blocks, upsampled to the image size and decoded by a
small convolution stack. The residual units replicate the reference's in-place ReLU: their
skip connection adds ``relu(x)``, not ``x`` (the checkpoint was trained that way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.dpt_position import uv_sincos_embedding

POSITION_EMBEDDING_WEIGHT = 0.1
FRAMES_PER_CHUNK = 8
"""Frames decoded at once: bounds the memory of the full-resolution feature maps."""


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FusionBlock(nn.Module):
    """``out_conv(resize(RCU2(coarse + RCU1(skip))))``; the coarsest level has no skip input."""

    def __init__(self, features: int, has_skip: bool = True):
        super().__init__()
        if has_skip:
            self.resConfUnit1 = ResidualConvUnit(features)  # noqa: N815 (checkpoint key)
        self.resConfUnit2 = ResidualConvUnit(features)  # noqa: N815 (checkpoint key)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = F.interpolate(self.resConfUnit2(x), size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTHead(nn.Module):
    def __init__(self, config: GCTConfig, output_dim: int):
        super().__init__()
        self.patch_size = config.patch_size
        dim_in, features, channels = 2 * config.embed_dim, config.dpt_features, config.dpt_out_channels
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, c, kernel_size=1) for c in channels)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(channels[0], channels[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(channels[1], channels[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(channels[3], channels[3], kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = nn.Module()
        for level, c in enumerate(channels, start=1):
            layer = nn.Conv2d(c, features, kernel_size=3, padding=1, bias=False)
            setattr(self.scratch, f"layer{level}_rn", layer)
        for level in (1, 2, 3, 4):
            setattr(self.scratch, f"refinenet{level}", FusionBlock(features, has_skip=level != 4))
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        # added position embeddings per (image size, device): constants, made once (not state)
        self._positions: dict[tuple[int, int, torch.device], tuple[torch.Tensor, ...]] = {}
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, config.dpt_head_features, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(config.dpt_head_features, output_dim, kernel_size=1),
        )

    def forward(self, layers: list[torch.Tensor], image_hw: tuple[int, int],
                patch_start: int) -> torch.Tensor:
        """Four layers ``[S, P, 2C]`` -> raw output ``[S, H, W, output_dim]`` (before activation).

        ``_decode`` is what ``GCTModel.compile_regions`` compiles; the position embeddings it adds
        come in as inputs, so that a compiled decode does not recompute them at every step.
        """
        positions = self.position_embeddings(image_hw, layers[0].device)
        chunks = [self._decode([x[start:start + FRAMES_PER_CHUNK] for x in layers], image_hw, patch_start,
                               positions)
                  for start in range(0, len(layers[0]), FRAMES_PER_CHUNK)]
        return torch.cat(chunks).permute(0, 2, 3, 1)

    def position_embeddings(self, image_hw: tuple[int, int],
                            device: torch.device) -> tuple[torch.Tensor, ...]:
        """The weighted embeddings added to the four projected layers and to the full-resolution map."""
        key = (*image_hw, device)
        if key not in self._positions:
            height, width = image_hw
            grid_h, grid_w = height // self.patch_size, width // self.patch_size
            sizes = [(project.out_channels, grid_h, grid_w) for project in self.projects]
            sizes.append((self.scratch.output_conv1.out_channels, height, width))
            self._positions[key] = tuple(
                POSITION_EMBEDDING_WEIGHT * uv_sincos_embedding(*size, width / height, device)
                for size in sizes)
        return self._positions[key]

    def _decode(self, layers: list[torch.Tensor], image_hw: tuple[int, int], patch_start: int,
                positions: tuple[torch.Tensor, ...]) -> torch.Tensor:
        height, width = image_hw
        grid_h, grid_w = height // self.patch_size, width // self.patch_size
        pyramid = []
        for x, project, resize, position in zip(layers, self.projects, self.resize_layers, positions):
            x = self.norm(x[:, patch_start:])  # [S, h*w, 2C]
            x = x.transpose(1, 2).reshape(len(x), -1, grid_h, grid_w)
            x = project(x)
            x = resize(x + position.to(x.dtype))
            pyramid.append(x)
        s = self.scratch
        r1, r2, r3, r4 = (getattr(s, f"layer{i}_rn")(x) for i, x in enumerate(pyramid, start=1))
        out = s.refinenet4(r4, None, size=r3.shape[2:])
        out = s.refinenet3(out, r3, size=r2.shape[2:])
        out = s.refinenet2(out, r2, size=r1.shape[2:])
        out = s.refinenet1(out, r1, size=(2 * r1.shape[2], 2 * r1.shape[3]))
        out = s.output_conv1(out)
        out = F.interpolate(out, size=(grid_h * self.patch_size, grid_w * self.patch_size), mode="bilinear",
                            align_corners=True)
        return s.output_conv2(out + positions[-1].to(out.dtype))  # [S, output_dim, H, W]


def activate_depth(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., 2]`` -> depth ``exp`` ``[...]`` and confidence ``1 + exp`` ``[...]``."""
    return raw[..., 0].exp(), 1 + raw[..., 1].exp()


def activate_points(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., 4]`` -> points ``sign(y) * (exp|y| - 1)`` ``[..., 3]`` and confidence ``1 + exp``."""
    xyz = raw[..., :3]
    return torch.sign(xyz) * torch.expm1(xyz.abs()), 1 + raw[..., 3].exp()
