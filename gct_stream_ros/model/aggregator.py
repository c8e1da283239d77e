"""The aggregator: DINO patch tokens + special tokens through alternating frame/global blocks.

Every frame becomes ``[camera, registers, scale, patches]`` tokens. Frame blocks attend within a
frame (2D RoPE); global blocks attend across frames through the ``GlobalKVCache`` (3D RoPE with
the frame's temporal index, applied before the keys are cached). The outputs of the selected
depths, ``[frame-block output, global-block output]`` concatenated on channels, feed the heads.
"""

from __future__ import annotations

import torch
from torch import nn

from gct_stream_ros.cache.base import GlobalKVCache, StepMode
from gct_stream_ros.model.attention import Mixer, self_attention
from gct_stream_ros.model.block import Block
from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.dinov2 import DinoV2
from gct_stream_ros.model.rope import Rotation, frame_positions_2d, frame_positions_3d, rope_2d, rope_3d

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Aggregator(nn.Module):
    def __init__(self, config: GCTConfig):
        super().__init__()
        self.config = config
        dim = config.embed_dim
        # variant 0 / 1 of each special token: see special_tokens()
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.register_token = nn.Parameter(torch.zeros(1, 2, config.num_register_tokens, dim))
        self.scale_token = nn.Parameter(torch.zeros(1, 2, 1, dim))
        self.patch_embed = DinoV2(config.img_size, config.patch_size, dim, config.dino_depth,
                                  config.dino_num_heads, config.dino_mlp_ratio, config.num_register_tokens)
        self.frame_blocks = nn.ModuleList(self._block() for _ in range(config.depth))
        self.global_blocks = nn.ModuleList(self._block() for _ in range(config.depth))
        self.reset_constants()

    def _block(self) -> Block:
        c = self.config
        return Block(c.embed_dim, c.num_heads, c.mlp_ratio, qk_norm=True, init_values=c.init_values)

    def reset_constants(self) -> None:
        """(Re)create the ImageNet normalisation buffers (constants, not in the checkpoint)."""
        device = self.camera_token.device if self.camera_token.device.type != "meta" else None
        for name, value in (("_resnet_mean", IMAGENET_MEAN), ("_resnet_std", IMAGENET_STD)):
            self.register_buffer(name, torch.tensor(value, device=device).view(1, 3, 1, 1), persistent=False)

    def special_tokens(self, first_position: int, num_frames: int, num_scale_frames: int) -> torch.Tensor:
        """``[S, num_special, C]`` for frames at sequence positions ``first_position + i``.

        Camera and register tokens use variant 0 only at position 0 (the frame that anchors the
        world frame); the scale token uses variant 0 for the scale frames (positions below
        ``num_scale_frames``, at least the first frame).
        """
        positions = torch.arange(first_position, first_position + num_frames, device=self.camera_token.device)
        first = (positions > 0).long()
        scale = (positions >= max(num_scale_frames, 1)).long()
        camera, registers = self.camera_token[0, first], self.register_token[0, first]
        return torch.cat((camera, registers, self.scale_token[0, scale]), dim=1)

    def forward(self, images: torch.Tensor, cache: GlobalKVCache, mode: StepMode,
                num_scale_frames: int) -> list[torch.Tensor]:
        """Images ``[S, 3, H, W]`` in [0, 1] -> one ``[S, P, 2C]`` tensor per selected layer.

        Runs one step of ``cache`` (``begin_step``, one ``attend`` per global block, ``end_step``).
        """
        c = self.config
        num_frames, _, height, width = images.shape
        grid_h, grid_w = height // c.patch_size, width // c.patch_size
        first_position = cache.frames_stored

        patches = self.patch_embed((images - self._resnet_mean) / self._resnet_std)  # [S, h*w, C]
        specials = self.special_tokens(first_position, num_frames, num_scale_frames)
        tokens = torch.cat((specials, patches), dim=1)  # [S, P, C]; fp32 under autocast, as the reference
        tokens_per_frame = tokens.shape[1]

        frame_rotation = rope_2d(frame_positions_2d(grid_h, grid_w, c.num_special_tokens).to(images.device),
                                 c.head_dim, c.rope_frequency)
        global_rotation = self._global_rotation(first_position, num_frames, grid_h, grid_w, images.device)

        def within_frame(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self_attention(frame_rotation(q), frame_rotation(k), v)

        outputs = []
        cache.begin_step(num_frames, tokens_per_frame, mode)
        for layer, (frame_block, global_block) in enumerate(zip(self.frame_blocks, self.global_blocks)):
            tokens = frame_block(tokens, within_frame)
            frame_output = tokens
            tokens = global_block(tokens, _across_frames(cache, layer, global_rotation))
            if layer in c.selected_layers:
                outputs.append(torch.cat((frame_output, tokens), dim=-1))
        cache.end_step()
        return outputs

    def _global_rotation(self, first_position: int, num_frames: int, grid_h: int, grid_w: int,
                         device: torch.device) -> Rotation:
        """Positions of the global blocks over the step's S*P tokens."""
        c = self.config
        if not c.enable_3d_rope:
            positions = frame_positions_2d(grid_h, grid_w, c.num_special_tokens).repeat(num_frames, 1)
            return rope_2d(positions.to(device), c.head_dim, c.rope_frequency)
        # the temporal index is the count of stored frames: a non-keyframe shares it with the next keyframe
        frame_indices = torch.arange(first_position, first_position + num_frames)
        positions = frame_positions_3d(frame_indices, grid_h, grid_w, c.num_special_tokens)
        return rope_3d(positions.to(device), c.rope3d_split, c.rope3d_theta)


def _across_frames(cache: GlobalKVCache, layer: int, rotation: Rotation) -> Mixer:
    """Mixer of global block ``layer``: rotate, then attend through the cache (which stores per mode)."""

    def mix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        num_frames, tokens = q.shape[:2]
        flat = (num_frames * tokens, *q.shape[2:])
        q = rotation(q.reshape(flat)).reshape(q.shape)  # [S, P, H, D]
        k = rotation(k.reshape(flat)).reshape(k.shape)
        return cache.attend(layer, q, k, v)

    return mix
