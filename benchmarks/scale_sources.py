"""CPU cost per frame of the metric-scale sources (``stream/scale``), on the worker thread after each step.

Stages, each timed over ``--frames`` frames (median and mean, ms), on a synthetic room frame at
the model resolution (``--width``) whose depth is off by 0.37x:

* ``odometry``: one increment of the odometry source;
* ``depth``: the aligned-depth ratio against a ``--sensor`` sized depth image;
* ``camera_height``: the RANSAC floor fit;
* ``scale_result``: a ``FrameResult`` (depth, world points, pose) multiplied into metres.

    .venv/bin/python benchmarks/scale_sources.py --frames 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

from gct_stream_ros.stream.points import depth_to_world_points
from gct_stream_ros.stream.result import FrameResult, FrameType
from gct_stream_ros.stream.scale.apply import scale_result
from gct_stream_ros.stream.scale.camera_height import CameraHeightScale
from gct_stream_ros.stream.scale.depth import DepthScale
from gct_stream_ros.stream.scale.odometry import OdometryScale
from gct_stream_ros.stream.scale.options import ScaleOptions
from gct_stream_ros.stream.scale.reference import ScaleReference
from gct_stream_ros.stream.synthetic import SyntheticScene, start_pose

MODEL_SCALE = 0.37


def _timed(fn: Callable[[], object], frames: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        fn()
        times.append(1000.0 * (time.perf_counter() - start))
    return times


def _frame(width: int) -> FrameResult:
    height = round(width * 0.75 / 14) * 14
    image, depth, intrinsics = SyntheticScene(0).render(start_pose(), width, height)
    model_depth = depth * np.float32(MODEL_SCALE)
    return FrameResult(index=0, stamp_ns=0, pose_c2w=np.eye(4), intrinsics=intrinsics,
                       intrinsics_input=intrinsics, depth=model_depth,
                       depth_conf=np.full(depth.shape, 2.0, np.float32), image=image,
                       frame_type=FrameType.KEYFRAME,
                       world_points=depth_to_world_points(model_depth, np.eye(4), intrinsics, np.float32))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--width", type=int, default=518, help="model width (multiple of 14)")
    parser.add_argument("--sensor", default="640x480", help="depth sensor image WxH")
    args = parser.parse_args(argv)
    result = _frame(args.width)
    sensor_w, sensor_h = (int(v) for v in args.sensor.split("x"))
    rows = np.linspace(0, result.depth.shape[0] - 1, sensor_h).round().astype(int)
    columns = np.linspace(0, result.depth.shape[1] - 1, sensor_w).round().astype(int)
    sensor = (result.depth[np.ix_(rows, columns)] / MODEL_SCALE).astype(np.float32)
    # the sensor image covers the same view at its own resolution
    input_hw = result.depth.shape
    odometry = OdometryScale(ScaleOptions(source="odometry"))
    depth = DepthScale(ScaleOptions(source="depth"))
    floor = CameraHeightScale(ScaleOptions(source="camera_height", camera_height=1.2))
    pose = np.eye(4)

    def odometry_step() -> None:
        pose[0, 3] += 1.0
        odometry.add(result, ScaleReference(camera_pose=pose.copy()))

    stages = {
        "odometry increment": odometry_step,
        f"depth ratio ({sensor_w}x{sensor_h} sensor)": lambda: depth.add(
            result, ScaleReference(depth=sensor, input_hw=input_hw)),
        "camera_height floor fit": lambda: floor.add(result, ScaleReference()),
        "scale_result (depth, points, pose)": lambda: scale_result(result, 2.7),
    }
    print(f"model {result.depth.shape[1]}x{result.depth.shape[0]}, {args.frames} frames")
    print("| stage | median (ms) | mean (ms) |\n|---|---|---|")
    for name, fn in stages.items():
        times = _timed(fn, args.frames)
        print(f"| {name} | {statistics.median(times):.2f} | {statistics.fmean(times):.2f} |")
    for name, source in (("depth", depth), ("camera_height", floor)):
        estimate = source.samples.estimate()
        print(f"{name}: {estimate.value:.4f} m per model unit (truth {1 / MODEL_SCALE:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
