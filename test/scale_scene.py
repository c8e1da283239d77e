"""The synthetic room seen by a network that is off by a known scale, and the metric sensors of a robot in it.

The oracle network answers with the true geometry multiplied by ``MODEL_SCALE`` (a network whose
unit is 0.37 m), so the metric scale to recover is ``1 / MODEL_SCALE``. The robot's sensors are
imperfect: odometry with 2 % noise per frame and wheel slip, a depth camera with missing pixels
and 1 % noise, a floor with bumps (what the camera-height fit sees).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from oracle_network import OracleNetwork

from gct_stream_ros.stream.config import EngineConfig
from gct_stream_ros.stream.result import FrameResult
from gct_stream_ros.stream.session import StreamSession
from gct_stream_ros.stream.synthetic import FLOOR_Y, Segment, SyntheticFrame, SyntheticScene

WIDTH, HEIGHT = 56, 42
MODEL_SCALE = 0.37
METRIC_SCALE = 1.0 / MODEL_SCALE
CAMERA_HEIGHT = 1.2
"""The synthetic camera's height above the floor (``synthetic.start_pose``), kept by the segments below."""
ODOMETRY_NOISE = 0.02
SLIP_EVERY = 11
SLIP_FACTOR = 1.3
"""Every ``SLIP_EVERY``-th frame the wheels report 30 % more motion than the robot made."""


def drive(frames_forward: int = 30) -> list[Segment]:
    """Drive forward (5 cm per frame), turn in place, stand still, drive on: a robot's level motion."""
    return [Segment.translate(frames_forward, 0.05, (0.0, 0.0, 1.0)), Segment.rotate(16, 3.0),
            Segment.still(10), Segment.translate(12, 0.05, (0.0, 0.0, 1.0))]


def turn_and_stand() -> list[Segment]:
    return [Segment.rotate(16, 3.0), Segment.still(12)]


def render(segments: list[Segment], seed: int = 0) -> list[SyntheticFrame]:
    count = sum(segment.frames for segment in segments)
    return SyntheticScene(seed).render_sequence(count, WIDTH, HEIGHT, segments)


def in_model_units(frame: SyntheticFrame, depth: np.ndarray | None = None) -> SyntheticFrame:
    """``frame`` as the off-scale network sees it (``depth``, in metres, replaces the true depth)."""
    pose = frame.c2w.copy()
    pose[:3, 3] *= MODEL_SCALE
    return replace(frame, depth=(frame.depth if depth is None else depth) * MODEL_SCALE, c2w=pose)


def run_session(frames: list[SyntheticFrame], model_depths: list[np.ndarray] | None = None,
                oracle: OracleNetwork | None = None, **engine_options) -> list[FrameResult]:
    """Every frame through ``StreamSession`` on the off-scale oracle (``oracle_for`` by default), every result
    in the order the engine gives them (revisions included)."""
    oracle = oracle or oracle_for(frames, model_depths)
    options = {"num_scale_frames": 4, "window_overlap": 1, **engine_options}
    session = StreamSession(EngineConfig(preset="tiny", device="cpu", image_width=WIDTH, **options),
                            network=oracle)
    return [r for frame in frames for r in session.push(frame.image, frame.stamp_ns)] + session.flush()


def oracle_for(frames: list[SyntheticFrame], model_depths: list[np.ndarray] | None = None,
               **oracle_options) -> OracleNetwork:
    """The oracle answering with the off-scale geometry (``model_depths``, metres, replace the true ones)."""
    depths = model_depths or [None] * len(frames)
    return OracleNetwork.for_synthetic([in_model_units(f, d) for f, d in zip(frames, depths)], WIDTH,
                                       **oracle_options)


def noisy_odometry(frames: list[SyntheticFrame], rng: np.random.Generator,
                   slip_every: int | None = SLIP_EVERY) -> list[np.ndarray]:
    """Camera poses by wheel odometry: true increments with 2 % noise, and a slip every ``slip_every``
    frames (also creeping while turning in place)."""
    poses = [frames[0].c2w.copy()]
    for index in range(1, len(frames)):
        step = frames[index].c2w[:3, 3] - frames[index - 1].c2w[:3, 3]
        step = step * (1 + rng.normal(0.0, ODOMETRY_NOISE))
        if slip_every and index % slip_every == 0:
            step = step * SLIP_FACTOR + np.array([0.01, 0.0, 0.0])  # a skid also moves it sideways
        pose = frames[index].c2w.copy()
        pose[:3, 3] = poses[-1][:3, 3] + step
        poses.append(pose)
    return poses


def sensor_depth(frame: SyntheticFrame, rng: np.random.Generator, upsample: int = 2) -> np.ndarray:
    """An aligned depth camera at ``upsample`` x the resolution: 1 % noise, 30 % of the pixels missing
    (NaN), 2 % wildly wrong (reflections)."""
    depth = np.repeat(np.repeat(frame.depth.astype(np.float64), upsample, 0), upsample, 1)
    depth *= 1 + rng.normal(0.0, 0.01, depth.shape)
    depth[rng.random(depth.shape) < 0.3] = np.nan
    wrong = rng.random(depth.shape) < 0.02
    depth[wrong] *= rng.uniform(0.2, 3.0, wrong.sum())
    return depth


def imperfect_floor(frame: SyntheticFrame, rng: np.random.Generator) -> np.ndarray:
    """The true depth with bumps of up to 2 cm on the floor and 1 % noise everywhere (metres)."""
    v, u = np.mgrid[0:frame.depth.shape[0], 0:frame.depth.shape[1]]
    rays = np.stack([(u - frame.intrinsics[0, 2]) / frame.intrinsics[0, 0],
                     (v - frame.intrinsics[1, 2]) / frame.intrinsics[1, 1], np.ones(u.shape)], -1)
    points = frame.c2w[:3, 3] + (rays @ frame.c2w[:3, :3].T) * frame.depth[..., None]
    floor = np.abs(points[..., 1] - FLOOR_Y) < 1e-6
    bump = 0.02 * np.sin(3.0 * points[..., 0]) * np.cos(2.0 * points[..., 2])
    # A point raised by ``bump`` lies on the same ray, closer by bump over the ray's drop to the floor.
    factor = np.where(floor, 1.0 - bump / (FLOOR_Y - frame.c2w[1, 3]), 1.0)
    return frame.depth * factor * (1 + rng.normal(0.0, 0.01, frame.depth.shape))
