"""The aggregator: DINO patch tokens + special tokens through alternating frame/global blocks.

Every frame becomes ``[camera, registers, scale, patches]`` tokens. Frame blocks attend within a
frame (2D RoPE); global blocks attend across frames through the ``GlobalKVCache`` (3D RoPE with
the frame's temporal index, applied before the keys are cached). The outputs of the selected
depths, ``[frame-block output, global-block output]`` concatenated on channels, feed the heads.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from gct_stream_ros.cache.base import GlobalKVCache
from gct_stream_ros.model.attention import self_attention
from gct_stream_ros.model.block import Block
from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.dinov2 import DinoV2
from gct_stream_ros.model.regions import compiled_copies
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
        self._segments = [functools.partial(self._layer_segment, layer) for layer in range(config.depth + 1)]
        self._frame_rotations: dict[tuple[int, int, torch.device], Rotation] = {}
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

    def forward(self, images: torch.Tensor, cache: GlobalKVCache, first_position: int,
                frame_indices: torch.Tensor, num_scale_frames: int) -> list[torch.Tensor]:
        """Images ``[S, 3, H, W]`` in [0, 1] -> one ``[S, P, 2C]`` tensor per selected layer.

        Attends through ``cache``, whose step the caller has begun (``begin_step``) and ends.
        ``first_position``: the sequence position of the first frame (``cache.frames_stored`` before
        the step); ``frame_indices``: the step's temporal indices ``[S]`` on the images' device (a
        tensor, so that a CUDA graph of the step serves every position).
        """
        c = self.config
        num_frames, _, height, width = images.shape
        grid_h, grid_w = height // c.patch_size, width // c.patch_size

        position = self.patch_embed.position_embedding(grid_h, grid_w)
        patches = self._embed_patches(images, position)  # [S, h*w, C]
        specials = self.special_tokens(first_position, num_frames, num_scale_frames)
        tokens = torch.cat((specials, patches), dim=1)  # [S, P, C]; fp32 under autocast, as the reference

        frame_rotation = self._frame_rotation(grid_h, grid_w, images.device)
        global_rotation = self._global_rotation(frame_indices, grid_h, grid_w)

        outputs = []
        x, mixed = tokens, None
        for layer, segment in enumerate(self._segments):
            global_output, frame_output, q, k, v = segment(x, mixed, frame_rotation, global_rotation)
            if layer - 1 in c.selected_layers:
                outputs.append(torch.cat((x, global_output), dim=-1))  # x: frame block layer-1's output
            if frame_output is None:
                break
            mixed = cache.attend(layer, q, k, v)
            x = frame_output
        return outputs

    # Everything between two cache calls has a fixed shape, so each piece below can be compiled
    # whole (``compile_regions``); eager and compiled runs execute the same code.

    def _embed_patches(self, images: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """``[S, 3, H, W]`` in [0, 1] -> DINO patch tokens ``[S, h*w, C]`` (``position``: DINO's
        position embedding for the grid)."""
        return self.patch_embed((images - self._resnet_mean) / self._resnet_std, position)

    def _layer_segment(self, layer: int, x: torch.Tensor, mixed: torch.Tensor | None,
                       frame_rotation: Rotation,
                       global_rotation: Rotation) -> tuple[torch.Tensor | None, ...]:
        """Finish global block ``layer - 1``, run frame block ``layer``, prepare global block ``layer``.

        ``x``: the input of global block ``layer - 1`` (the tokens, for layer 0) ``[S, P, C]``;
        ``mixed``: that block's attention over the cache ``[S, P, H, D]``. Returns (output of global
        block ``layer - 1``, output of frame block ``layer``, its rotated q, k and v); the entries
        past the last block are None.
        """
        global_output = self.global_blocks[layer - 1].finish(x, mixed) if layer else None
        if layer == len(self.frame_blocks):
            return global_output, None, None, None, None

        def within_frame(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self_attention(frame_rotation(q), frame_rotation(k), v)

        frame_output = self.frame_blocks[layer](x if global_output is None else global_output, within_frame)
        q, k, v = self.global_blocks[layer].attention_inputs(frame_output)  # [S, P, H, D]
        flat = (q.shape[0] * q.shape[1], *q.shape[2:])
        q = global_rotation(q.reshape(flat)).reshape(q.shape)
        k = global_rotation(k.reshape(flat)).reshape(k.shape)
        return global_output, frame_output, q, k, v

    def compile_regions(self, **options: object) -> None:
        """``torch.compile`` the patch embedding and every layer segment (each over its own copy of
        the code: ``regions.py``) with ``options``."""
        self._embed_patches = torch.compile(self._embed_patches, **options)
        self._segments = compiled_copies(self._layer_segment, len(self.frame_blocks) + 1, **options)

    def _frame_rotation(self, grid_h: int, grid_w: int, device: torch.device) -> Rotation:
        """The frame blocks' 2D RoPE: a constant of the image size, made once."""
        key = (grid_h, grid_w, device)
        if key not in self._frame_rotations:
            c = self.config
            positions = frame_positions_2d(grid_h, grid_w, c.num_special_tokens).to(device)
            self._frame_rotations[key] = rope_2d(positions, c.head_dim, c.rope_frequency)
        return self._frame_rotations[key]

    def _global_rotation(self, frame_indices: torch.Tensor, grid_h: int, grid_w: int) -> Rotation:
        """Positions of the global blocks over the step's S*P tokens."""
        c = self.config
        if not c.enable_3d_rope:
            frame = self._frame_rotation(grid_h, grid_w, frame_indices.device)
            frames = len(frame_indices)
            return Rotation(frame.cos.repeat(frames, 1, 1), frame.sin.repeat(frames, 1, 1), frame.interleaved)
        # the temporal index is the count of stored frames: a non-keyframe shares it with the next keyframe
        positions = frame_positions_3d(frame_indices, grid_h, grid_w, c.num_special_tokens)
        return rope_3d(positions, c.rope3d_split, c.rope3d_theta)

