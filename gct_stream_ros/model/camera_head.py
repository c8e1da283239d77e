"""Camera head: the pose of every frame from its camera token, refined iteratively.

Each iteration modulates the same normalised camera token with the current pose estimate
(AdaLN: shift, scale, gate from ``embed_pose``), runs the causal trunk over the frames (its own
KV cache per iteration, no positional encoding) and adds a pose delta. The running pose is fed
back before its activation; only the reported pose has the FoV ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gct_stream_ros.model.attention import Mixer
from gct_stream_ros.model.block import Block
from gct_stream_ros.model.camera_cache import CameraKVCache
from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.mlp import Mlp

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
        raw_pose = None
        poses = []
        for iteration in range(self.num_iterations):
            if raw_pose is None:
                pose_input = self.empty_pose_tokens.expand(1, tokens.shape[1], -1)
            else:
                pose_input = raw_pose
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(pose_input)).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            for index, block in enumerate(self.trunk):
                x = block(x, _through_cache(cache, iteration, index))
            delta = self.pose_branch(self.trunk_norm(x))
            raw_pose = delta if raw_pose is None else raw_pose + delta
            poses.append(activate_pose(raw_pose[0]))
        return poses


def activate_pose(raw_pose: torch.Tensor) -> torch.Tensor:
    """Translation and quaternion linear, FoV through a ReLU: ``[..., 9] -> [..., 9]``."""
    return torch.cat((raw_pose[..., :7], F.relu(raw_pose[..., 7:])), dim=-1)


def _through_cache(cache: CameraKVCache, iteration: int, block: int) -> Mixer:
    def mix(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return cache.attend(iteration, block, q[0], k[0], v[0])[None]  # [1, S, H, D]

    return mix
