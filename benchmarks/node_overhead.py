"""CPU cost per frame of everything the node does around the network step (no GPU needed).

Stages, each timed separately over ``--frames`` frames (median and mean, ms):

* ``decode``: a ``sensor_msgs/Image`` (rgb8/bgr8) or a JPEG ``CompressedImage`` -> RGB array;
* ``preprocess``: RGB array -> the model input ``[3, H, W]`` at 518 px width, with each of the
  ``model.resize`` methods (``pil``: the reference's, exact; ``torch``: the same filter, faster);
* ``result``: a step output on the CPU -> ``FrameResult`` (pose decoding, world points from depth);
* ``messages``: depth and confidence images, camera info, the cloud's points and its PointCloud2;
* ``map``: a keyframe's cloud (the node's decimation and confidence threshold) fused into a full map of
  the node's default size (``output.map.*``), the camera moving 10 cm a frame, so that every keyframe
  adds voxels and evicts as many (``mapping/fused_map.py``, on the publisher thread);
* ``publish``: handing those messages to rclpy publishers (serialisation, no subscriber).

The totals add the rgb8 decode and every later stage, once per resize method. The node runs them on
three threads (docs/architecture.md, "Threads"): decode and preprocessing on the executor thread,
messages and publishing on the publisher thread, both beside the step; only ``result`` (inside the
session's step) stays on the worker's critical path, reported as ``critical path``.

    .venv/bin/python benchmarks/node_overhead.py --frames 30
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
import torch
from PIL import Image as PILImage
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from gct_stream_ros import settings
from gct_stream_ros.mapping.fused_map import FusedMap
from gct_stream_ros.model.network import StepOutput
from gct_stream_ros.model.preprocess import RESIZE_METHODS, resize_image, to_model_input
from gct_stream_ros.ros import messages
from gct_stream_ros.ros.image_decode import decode_image
from gct_stream_ros.stream.estimate import FrameEstimate
from gct_stream_ros.stream.frame_assembly import assemble_frame
from gct_stream_ros.stream.input_frame import InputFrame
from gct_stream_ros.stream.result import FrameType


def _timed(fn: Callable[[], Any], frames: int) -> tuple[list[float], Any]:
    out = fn()  # warm-up: first-call allocations and imports are not per-frame costs
    times = []
    for _ in range(frames):
        start = time.perf_counter()
        out = fn()
        times.append(1000.0 * (time.perf_counter() - start))
    return times, out


def _raw_image_message(rgb: np.ndarray, encoding: str) -> Image:
    data = rgb[..., ::-1] if encoding == "bgr8" else rgb
    message = Image(header=messages.header(1, "cam"), height=rgb.shape[0], width=rgb.shape[1],
                    encoding=encoding, is_bigendian=0, step=rgb.shape[1] * 3)
    message.data = np.ascontiguousarray(data).tobytes()
    return message


def _jpeg_message(rgb: np.ndarray) -> CompressedImage:
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return CompressedImage(header=messages.header(1, "cam"), format="jpeg", data=buffer.getvalue())


def _camera_image(width: int, height: int) -> np.ndarray:
    """Smooth content plus a little noise, so the JPEG has a realistic size."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([127 + 100 * np.sin(xx / (9 + 4 * c) + yy / 17) for c in range(3)], -1)
    return np.clip(rgb + rng.integers(0, 8, rgb.shape), 0, 255).astype(np.uint8)


def _step_output(height: int, width: int) -> StepOutput:
    generator = torch.Generator().manual_seed(0)
    pose = torch.tensor([[0.1, -0.05, 0.2, 0.01, 0.02, -0.01, 1.0, 0.9, 1.1]])
    depth = 1.0 + torch.rand(1, height, width, generator=generator)
    confidence = 1.0 + torch.rand(1, height, width, generator=generator)
    return StepOutput(pose_enc=pose, depth=depth, depth_conf=confidence)


def measure(frames: int, input_wh: tuple[int, int], width: int) -> list[tuple[str, str, list[float]]]:
    rgb = _camera_image(*input_wh)
    rows: list[tuple[str, str, list[float]]] = []
    label = f"{input_wh[0]}x{input_wh[1]}"
    for encoding in ("rgb8", "bgr8"):
        message = _raw_image_message(rgb, encoding)
        times, decoded = _timed(lambda message=message: decode_image(message), frames)
        rows.append((f"decode Image {encoding} {label}", "decode", times))
    jpeg = _jpeg_message(rgb)
    times, _ = _timed(lambda: decode_image(jpeg), frames)
    rows.append((f"decode CompressedImage jpeg {label}", "decode_jpeg", times))
    for method in RESIZE_METHODS:
        times, (resized, geometry) = _timed(lambda m=method: resize_image(decoded, width, m), frames)
        size = f"{resized.shape[1]}x{resized.shape[0]}"
        rows.append((f"resize ({method}) -> {size}", f"resize_{method}", times))
    times, image = _timed(lambda: to_model_input(resized), frames)
    rows.append(("uint8 -> float model input", "to_input", times))

    height, model_width = image.shape[-2:]
    output = _step_output(height, model_width)
    frame = InputFrame(index=9, stamp_ns=123, image=image, geometry=geometry, rgb=resized)

    def result() -> Any:
        estimate = FrameEstimate.from_step(output, 0, FrameType.KEYFRAME)
        return assemble_frame(frame, estimate, sequence=0, window=0)

    times, res = _timed(result, frames)
    rows.append(("result: StepOutput -> FrameResult (+world points)", "result", times))
    times, images = _timed(lambda: (messages.depth_image(res, "cam"), messages.confidence_image(res, "cam"),
                                    messages.camera_info(res, "cam")), frames)
    rows.append(("depth + confidence + camera_info messages", "images", times))
    times, (xyz, colours) = _timed(lambda: messages.cloud_points(res, np.eye(4)), frames)
    rows.append((f"cloud points ({len(xyz)} pts, decimation 1)", "cloud", times))
    times, cloud = _timed(lambda: messages.point_cloud(xyz, colours, 123, "map"), frames)
    rows.append(("PointCloud2 packing", "pack", times))
    rows.append(_fused_map_row(frames, res))
    rows.append(("publish depth, confidence, camera_info, cloud", "publish",
                 _publish_times(frames, (*images, cloud))))
    return rows


def _fused_map_row(frames: int, result: Any) -> tuple[str, str, list[float]]:
    values = settings.defaults()
    fused = FusedMap(values["output.map.voxel_size"], values["output.map.max_points"])
    rng = np.random.default_rng(1)
    while len(fused) < fused.max_points:  # filled far from the camera: these voxels are the oldest
        fused.add(rng.uniform(-30.0, 30.0, (100_000, 3)) + (200.0, 0.0, 0.0),
                  rng.integers(0, 256, (100_000, 3), dtype=np.uint8))
    moved = np.eye(4)
    clouds = []
    for _ in range(frames + 1):
        moved[0, 3] += 0.1
        clouds.append(messages.cloud_points(result, moved, values["output.points.decimation"],
                                            values["output.points.min_confidence"]))
    keyframes = iter(clouds)
    times, _ = _timed(lambda: fused.add(*next(keyframes)), frames)
    return (f"fused map: add a keyframe ({len(clouds[0][0])} pts) to a full map ({fused.max_points} voxels)",
            "map", times)


def _publish_times(frames: int, outgoing: tuple[Any, ...]) -> list[float]:
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=231)
    try:
        node = rclpy.create_node("node_overhead", context=context)
        publishers = [node.create_publisher(type(m), topic, 5) for m, topic in
                      zip(outgoing, ("depth/image", "depth/confidence", "depth/camera_info", "points"))]
        assert [type(m) for m in outgoing] == [Image, Image, CameraInfo, PointCloud2]

        def publish() -> None:
            for publisher, message in zip(publishers, outgoing):
                publisher.publish(message)

        times, _ = _timed(publish, frames)
        node.destroy_node()
        return times
    finally:
        rclpy.shutdown(context=context)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--input", default="640x467", help="camera image WxH (640x467 -> model 518x378)")
    parser.add_argument("--width", type=int, default=518, help="model input width")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    input_wh = tuple(int(v) for v in args.input.split("x"))
    rows = measure(args.frames, input_wh, args.width)

    print(f"node overhead per frame, input {args.input}, model width {args.width}, {args.frames} frames, "
          f"torch threads {args.threads}\n")
    print("| stage | median (ms) | mean (ms) |\n|---|---|---|")
    medians = {}
    for name, key, times in rows:
        medians[key] = statistics.median(times)
        print(f"| {name} | {medians[key]:.2f} | {statistics.fmean(times):.2f} |")
    shared = sum(medians[k] for k in ("decode", "to_input", "result", "images", "cloud", "pack", "map",
                                      "publish"))
    for method in RESIZE_METHODS:
        total = shared + medians[f"resize_{method}"]
        print(f"| **total, rgb8 input, model.resize {method}** | **{total:.2f}** | |")
    print(f"| **critical path (worker thread: result)** | **{medians['result']:.2f}** | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
