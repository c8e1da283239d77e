"""Camera head: the pose of every frame from its camera token, refined iteratively.

Each iteration modulates the same normalised camera token with the current pose estimate
(AdaLN: shift, scale, gate from ``embed_pose``), runs the causal trunk over the frames (its own
KV cache per iteration, no positional encoding) and adds a pose delta. The running pose is fed
back before its activation; only the reported pose has the FoV ReLU.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn

from gct_stream_ros.model.block import Block
from gct_stream_ros.model.camera_cache import CameraKVCache
from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.mlp import Mlp
from gct_stream_ros.model.regions import compiled_copies

POSE_ENCODING_DIM = 9
"""[tx, ty, tz, qx, qy, qz, qw, fov_h, fov_w]"""


class CameraHead(nn.Module):
    def __init__(self, config: GCTConfig):
        super().__init__()
        dim = config.camera_dim
        self.num_iterations = config.camera_iterations
        self.trunk = nn.Sequential(*(
            Block(dim, config.camera_num_heads, config.camera_mlp_ratio, init_values=config.init_values)
            for _ in range(config.camera_depth)))
        self.token_norm = nn.LayerNorm(dim)
        self.trunk_norm = nn.LayerNorm(dim)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))  # noqa: N815 (checkpoint key)
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, POSE_ENCODING_DIM)
        self.trunk_dtype = torch.float32
        """Precision of the trunk's linear layers (``half_trunk``); everything else stays fp32."""
        stations = self.num_iterations * config.camera_depth + 1
        self._segments = [functools.partial(self._segment, station) for station in range(stations)]
        self._start_random_weights_from_a_valid_pose()

    @torch.no_grad()
    def _start_random_weights_from_a_valid_pose(self) -> None:
        # Loaded checkpoints overwrite this. Untrained weights (tests, the tiny demo) would give a
        # FoV the ReLU clamps to 0, i.e. an infinite focal length; small deltas around qw = 1 and a
        # ~60 degree FoV after all iterations keep every derived intrinsic and flow finite.
        self.pose_branch.fc2.weight.mul_(0.01)
        self.pose_branch.fc2.bias.zero_()
        self.pose_branch.fc2.bias[6:] = 1.0 / self.num_iterations

    def forward(self, features: torch.Tensor, cache: CameraKVCache) -> list[torch.Tensor]:
        """Last selected layer ``[S, P, C]`` -> activated pose encodings ``[S, 9]``, one per iteration.

        The caller brackets the call with ``cache.begin_step``/``end_step``.
        """
        tokens = self.token_norm(features[:, 0])[None]  # [1, S, C]: the camera tokens as one sequence
        blocks = len(self.trunk)
        x = raw_pose = mixed = None
        poses = []
        for station, segment in enumerate(self._segments):
            x, raw_pose, pose, q, k, v = segment(tokens, x, raw_pose, mixed)
            if pose is not None:
                poses.append(pose)
            if q is None:
                break
            iteration, block = divmod(station, blocks)
            mixed = cache.attend(iteration, block, q[0], k[0], v[0])[None]  # [1, S, H, D]
        return poses

    # Everything between two cache calls has a fixed shape, so each station below can be compiled
    # whole (``compile_regions``); eager and compiled runs execute the same code.

    def _segment(self, station: int, tokens: torch.Tensor, x: torch.Tensor | None,
                 raw_pose: torch.Tensor | None,
                 mixed: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        """Finish trunk block ``station - 1`` (of the flattened iterations x blocks), then prepare
        block ``station``'s attention.

        ``tokens``: the normalised camera tokens ``[1, S, C]``; ``x``: the input of block
        ``station - 1`` and ``mixed`` its attention over the cache ``[1, S, H, D]``; ``raw_pose``:
        the running pose ``[1, S, 9]`` (None before the first iteration ends). Returns (the input of
        block ``station``, the running pose, the activated pose ``[S, 9]`` when an iteration ended
        here, block ``station``'s q, k, v ``[1, S, H, D]``); the entries past the last block are None.
        """
        blocks = len(self.trunk)
        pose = None
        if station:
            with self._trunk_precision(tokens.device):
                x = self.trunk[(station - 1) % blocks].finish(x, mixed)
            if station % blocks == 0:  # an iteration ends
                delta = self.pose_branch(self.trunk_norm(x))
                raw_pose = delta if raw_pose is None else raw_pose + delta
                pose = activate_pose(raw_pose[0])
        if station == self.num_iterations * blocks:
            return x, raw_pose, pose, None, None, None
        if station % blocks == 0:  # an iteration starts: modulate the tokens with the running pose
            empty = self.empty_pose_tokens.expand(1, tokens.shape[1], -1)
            pose_input = empty if raw_pose is None else raw_pose
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(pose_input)).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
        with self._trunk_precision(tokens.device):
            q, k, v = self.trunk[station % blocks].attention_inputs(x)
        # the cache and its attention stay fp32 whatever the trunk's precision
        return x, raw_pose, pose, q.float(), k.float(), v.float()

    def half_trunk(self) -> None:
        """Keep the trunk's linear layers in fp16 and run them under fp16 autocast.

        One camera token per frame makes each of them a matrix-vector product, bound by reading its
        fp32 weights (~0.8 GB a frame for 4 iterations x 4 blocks); fp16 halves that (~0.4 ms a
        frame on an H200, ``benchmarks/README.md``). Norms, LayerScale, the residual stream, the
        camera cache and its attention, the pose branch and the returned poses stay fp32.
        """
        for block in self.trunk:
            for layer in block.modules():
                if isinstance(layer, nn.Linear):
                    layer.to(torch.float16)
        self.trunk_dtype = torch.float16

    def _trunk_precision(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.trunk_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.trunk_dtype)

    def compile_regions(self, **options: object) -> None:
        """``torch.compile`` every station (each over its own copy of the code: ``regions.py``)."""
        self._segments = compiled_copies(self._segment, len(self._segments), **options)

def activate_pose(raw_pose: torch.Tensor) -> torch.Tensor:
    """Translation and quaternion linear, FoV through a ReLU: ``[..., 9] -> [..., 9]``."""
    return torch.cat((raw_pose[..., :7], F.relu(raw_pose[..., 7:])), dim=-1)

