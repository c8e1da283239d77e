"""A stand-in network that answers with the ground truth, for testing the engine without a model.

``OracleNetwork`` implements ``StreamingNetwork``. It recognises each frame by the exact bytes
of the image tensor it is given (so it must be registered with the tensors the engine will
feed it) and returns that frame's true depth and pose. Like the real model, poses are
expressed in the world frame of the current sequence: the camera of the first frame stepped
after ``reset`` is the identity. With ``window_sim3_seed`` set, every sequence (every window of
the windowed mode) additionally gets its own unknown similarity (random scale, rotation and
translation), applied to poses, depth and points, so the engine has to recover the windows'
relation. Quaternions can be returned raw (scaled by a random factor of either sign), as the
real network does.

It also checks that it is driven correctly (phase 1 only on an empty sequence, commit and
rollback only after a DEFER step...) and records every call in ``calls``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gct_stream_ros.cache.base import CacheStats, StepMode
from gct_stream_ros.model.network import StepOutput
from gct_stream_ros.model.pose_encoding import encode_pose
from gct_stream_ros.model.preprocess import preprocess_image
from gct_stream_ros.stream.alignment import Sim3
from gct_stream_ros.stream.points import depth_to_world_points
from gct_stream_ros.stream.synthetic import SyntheticFrame

ORACLE_CONFIDENCE = 2.0


@dataclass
class TruthEntry:
    depth: np.ndarray  # [H, W] z-depth
    c2w: np.ndarray  # [4, 4]
    intrinsics: np.ndarray  # [3, 3], principal point at the centre


def image_key(image: torch.Tensor) -> str:
    """Identity of a ``[3, H, W]`` image tensor: a digest of its exact float32 contents."""
    data = image.detach().to(torch.float32).cpu().contiguous().numpy()
    return hashlib.sha1(data.tobytes() + str(data.shape).encode()).hexdigest()


def random_sim3(rng: np.random.Generator) -> Sim3:
    """Scale in [0.3, 3], any rotation, translation within a few units."""
    axis_angle = rng.normal(size=3)
    axis_angle *= rng.uniform(0.1, np.pi) / np.linalg.norm(axis_angle)
    skew = np.array([[0, -axis_angle[2], axis_angle[1]], [axis_angle[2], 0, -axis_angle[0]],
                     [-axis_angle[1], axis_angle[0], 0]])
    angle = np.linalg.norm(axis_angle)
    rotation = np.eye(3) + np.sin(angle) / angle * skew + (1 - np.cos(angle)) / angle**2 * skew @ skew
    return Sim3(float(np.exp(rng.uniform(np.log(0.3), np.log(3.0)))), rotation, rng.uniform(-3, 3, size=3))


class OracleNetwork:
    """``StreamingNetwork`` returning the registered ground truth (see the module docstring)."""

    def __init__(self, window_sim3_seed: int | None = None, raw_quaternions: bool = False,
                 point_head: bool = False) -> None:
        self.point_head = point_head
        self.raw_quaternions = raw_quaternions
        self.calls: list[tuple[str, ...]] = []
        self.sequence_sim3: list[Sim3] = []
        """The similarity applied to each sequence since construction (identity without a seed)."""
        self._truth: dict[str, TruthEntry] = {}
        self._sim3_rng = None if window_sim3_seed is None else np.random.default_rng(window_sim3_seed)
        self._quaternion_rng = np.random.default_rng(0)
        self._anchor_w2c: np.ndarray | None = None
        self._stored = 0
        self._deferred = False
        self.reset()

    def register(self, image: torch.Tensor, depth: np.ndarray, c2w: np.ndarray,
                 intrinsics: np.ndarray) -> None:
        """Teach the oracle one frame: the exact ``[3, H, W]`` tensor and its geometry at that size."""
        if depth.shape != tuple(image.shape[-2:]):
            raise ValueError(f"depth {depth.shape} does not match the image {tuple(image.shape[-2:])}")
        self._truth[image_key(image)] = TruthEntry(depth.astype(np.float64), np.asarray(c2w, np.float64),
                                                   np.asarray(intrinsics, np.float64))

    @classmethod
    def for_synthetic(cls, frames: Sequence[SyntheticFrame], image_width: int, **options) -> OracleNetwork:
        """An oracle knowing ``frames`` as ``StreamSession.push`` will feed them.

        The frames must be rendered at the model resolution for ``image_width`` (width equal to
        it, height a multiple of the patch size), so that the truth applies to the tensors.
        """
        oracle = cls(**options)
        for frame in frames:
            image, geometry = preprocess_image(frame.image, image_width)
            if tuple(geometry.model_hw) != frame.depth.shape:
                raise ValueError(f"frame rendered at {frame.depth.shape}, "
                                 f"the model sees {tuple(geometry.model_hw)}")
            oracle.register(image, frame.depth, frame.c2w, frame.intrinsics)
        return oracle

    def step(self, images: torch.Tensor, mode: StepMode = StepMode.STORE,
             num_scale_frames: int | None = None) -> StepOutput:
        if self._deferred:
            raise RuntimeError("step after a DEFER step without commit() or rollback()")
        if len(images) > 1 and (self._stored or mode != StepMode.STORE):
            raise RuntimeError("a multi-frame step (phase 1) needs an empty sequence and STORE mode")
        entries = [self._lookup(image) for image in images]
        self.calls.append(("step", mode.value, str(len(images))))
        if self._anchor_w2c is None:
            self._anchor_w2c = np.linalg.inv(entries[0].c2w)
        sim3 = self.sequence_sim3[-1]
        height, width = images.shape[-2:]
        pose_enc, depth, points = [], [], []
        for entry in entries:
            c2w = self._anchor_w2c @ entry.c2w
            c2w[:3, :3] = sim3.rotation @ c2w[:3, :3]
            c2w[:3, 3] = sim3.scale * sim3.rotation @ c2w[:3, 3] + sim3.translation
            encoding = encode_pose(torch.from_numpy(c2w), torch.from_numpy(entry.intrinsics), (height, width))
            if self.raw_quaternions:
                sign = self._quaternion_rng.choice([-1.0, 1.0])
                encoding[3:7] *= sign * self._quaternion_rng.uniform(0.5, 2.0)
            pose_enc.append(encoding)
            scaled_depth = entry.depth * sim3.scale
            depth.append(torch.from_numpy(scaled_depth))
            points.append(torch.from_numpy(depth_to_world_points(scaled_depth, c2w, entry.intrinsics)))
        if mode in (StepMode.STORE, StepMode.DEFER):
            self._stored += len(images)
        self._deferred = mode == StepMode.DEFER
        depth_tensor = torch.stack(depth).float()
        return StepOutput(
            pose_enc=torch.stack(pose_enc).float(),
            depth=depth_tensor,
            depth_conf=torch.full_like(depth_tensor, ORACLE_CONFIDENCE),
            world_points=torch.stack(points).float() if self.point_head else None,
            world_points_conf=torch.full_like(depth_tensor, ORACLE_CONFIDENCE) if self.point_head else None,
        )

    def commit(self) -> None:
        self._end_deferred("commit")

    def rollback(self) -> None:
        self._end_deferred("rollback")
        self._stored -= 1

    def reset(self) -> None:
        self.calls.append(("reset",))
        self._anchor_w2c = None
        self._stored = 0
        self._deferred = False
        self.sequence_sim3.append(Sim3.identity() if self._sim3_rng is None else random_sim3(self._sim3_rng))

    @property
    def frames_stored(self) -> int:
        return self._stored

    def cache_stats(self) -> CacheStats:
        return CacheStats(frames_stored=self._stored, frames_evicted=0, policy="oracle")

    def modes(self) -> list[str]:
        """The mode of every accepted single-frame step so far, in order (for tests)."""
        return [call[1] for call in self.calls if call[0] == "step" and call[2] == "1"]

    def _end_deferred(self, name: str) -> None:
        if not self._deferred:
            raise RuntimeError(f"{name}() without a pending DEFER step")
        self.calls.append((name,))
        self._deferred = False

    def _lookup(self, image: torch.Tensor) -> TruthEntry:
        entry = self._truth.get(image_key(image))
        if entry is None:
            raise KeyError("the oracle does not know this image (register the exact tensor the engine feeds)")
        return entry
