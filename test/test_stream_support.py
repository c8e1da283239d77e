"""Helpers shared by the engine's tests (no tests here): synthetic frames through the oracle."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from oracle_network import OracleNetwork

from gct_stream_ros.stream.config import EngineConfig
from gct_stream_ros.stream.result import FrameResult
from gct_stream_ros.stream.session import StreamSession
from gct_stream_ros.stream.synthetic import Segment, SyntheticFrame, SyntheticScene

WIDTH, HEIGHT = 70, 56  # a model resolution (multiple of 14), so the oracle's truth applies as rendered


def render(num_frames: int, trajectory: str | Sequence[Segment] | None = None, seed: int = 0,
           width: int = WIDTH, height: int = HEIGHT) -> list[SyntheticFrame]:
    return SyntheticScene(seed).render_sequence(num_frames, width, height, trajectory)


def oracle_session(frames: Sequence[SyntheticFrame], **settings) -> tuple[StreamSession, OracleNetwork]:
    """A tiny-preset session at ``WIDTH`` driving an oracle that knows ``frames``.

    ``settings`` are ``EngineConfig`` fields, plus the oracle's options prefixed ``oracle_``.
    """
    oracle_options = {name.removeprefix("oracle_"): settings.pop(name)
                      for name in list(settings) if name.startswith("oracle_")}
    settings = {"preset": "tiny", "image_width": WIDTH, "num_scale_frames": 2, **settings}
    config = EngineConfig(**{"window_overlap": settings["num_scale_frames"], **settings})
    oracle = OracleNetwork.for_synthetic(frames, WIDTH, **oracle_options)
    return StreamSession(config, oracle), oracle


def push_all(session: StreamSession, frames: Sequence[SyntheticFrame]) -> list[list[FrameResult]]:
    """The results of every push, one list per pushed frame."""
    return [session.push(frame.image, frame.stamp_ns) for frame in frames]


def relative_poses(frames: Sequence[SyntheticFrame]) -> np.ndarray:
    """[N, 4, 4] true poses in the frame of the first camera (the network's world frame)."""
    anchor = np.linalg.inv(frames[0].c2w)
    return np.stack([anchor @ frame.c2w for frame in frames])
