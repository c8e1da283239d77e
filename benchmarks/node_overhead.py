"""CPU cost per frame of everything the node does around the network step (no GPU needed).

Stages, each timed separately over ``--frames`` frames (median and mean, ms):

* ``decode``: a ``sensor_msgs/Image`` (rgb8/bgr8) or a JPEG ``CompressedImage`` -> RGB array
  (``gct_stream_ros.ros.image_decode`` when present, else a NumPy/PIL stand-in, marked so);
* ``preprocess``: RGB array -> the model input ``[3, H, W]`` at 518 px width (the model's
  preprocessing when present, else a PIL bicubic resize stand-in);
* ``result``: a step output on the CPU -> ``FrameResult`` (pose decoding, world points from depth);
* ``messages``: depth and confidence images, camera info, and the PointCloud2 (every pixel).

    .venv/bin/python benchmarks/node_overhead.py --frames 30
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _timed(fn: Callable[[], Any], frames: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(frames):
        t0 = time.perf_counter()
        out = fn()
        times.append(1000.0 * (time.perf_counter() - t0))
    return times, out


def _raw_image_message(rgb: np.ndarray, encoding: str) -> Any:
    from sensor_msgs.msg import Image  # noqa: PLC0415 - ROS is optional for the rest of the file

    data = rgb[..., ::-1] if encoding == "bgr8" else rgb
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, is_bigendian=0,
                step=rgb.shape[1] * 3)
    msg.data = np.ascontiguousarray(data).tobytes()
    return msg


def _jpeg_message(rgb: np.ndarray) -> Any:
    from sensor_msgs.msg import CompressedImage  # noqa: PLC0415

    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    msg = CompressedImage(format="jpeg")
    msg.data = buffer.getvalue()
    return msg


def decoder() -> tuple[Callable[[Any], np.ndarray], str]:
    """The node's decoder of Image/CompressedImage messages, or a stand-in."""
    module = _optional("gct_stream_ros.ros.image_decode")
    for name in ("decode_image", "image_to_rgb", "decode"):
        if module is not None and hasattr(module, name):
            return getattr(module, name), f"ros.image_decode.{name}"

    def stand_in(msg: Any) -> np.ndarray:
        if hasattr(msg, "format"):
            return np.asarray(PILImage.open(io.BytesIO(bytes(msg.data))).convert("RGB"))
        array = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.width, 3)
        return array[..., ::-1].copy() if msg.encoding == "bgr8" else array

    return stand_in, "stand-in (numpy/PIL)"


def preprocessor(width: int) -> tuple[Callable[[np.ndarray], torch.Tensor], str]:
    """The model's preprocessing (RGB uint8 -> [3, H, W] in [0, 1]) or a PIL stand-in."""
    module = _optional("gct_stream_ros.model.preprocess")
    if module is not None:
        for name in ("preprocess_image", "preprocess"):
            fn = getattr(module, name, None)
            if fn is not None:
                # returns (image, geometry); the geometry maps intrinsics back to the input
                return (lambda rgb, fn=fn: fn(rgb, width)[0]), f"model.preprocess.{name}"

    def stand_in(rgb: np.ndarray) -> torch.Tensor:
        height = round(rgb.shape[0] * width / rgb.shape[1] / 14) * 14
        resized = PILImage.fromarray(rgb).resize((width, height), PILImage.BICUBIC)
        return torch.from_numpy(np.asarray(resized)).permute(2, 0, 1).float() / 255.0

    return stand_in, "stand-in (PIL bicubic)"


def fake_step_output(height: int, width: int) -> Any:
    from gct_stream_ros.model.network import StepOutput  # noqa: PLC0415

    gen = torch.Generator().manual_seed(0)
    pose = torch.tensor([[0.1, -0.05, 0.2, 0.01, 0.02, -0.01, 1.0, 0.9, 1.1]])
    depth = 1.0 + torch.rand(1, height, width, generator=gen)
    conf = 1.0 + torch.rand(1, height, width, generator=gen)
    return StepOutput(pose_enc=pose, depth=depth, depth_conf=conf)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--input", default="640x467", help="camera image WxH (640x467 -> model 518x378)")
    p.add_argument("--width", type=int, default=518, help="model input width")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the node's setting)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from gct_stream_ros.ros import messages  # noqa: PLC0415
    from gct_stream_ros.stream.estimate import FrameEstimate  # noqa: PLC0415
    from gct_stream_ros.stream.frame_assembly import assemble_frame  # noqa: PLC0415
    from gct_stream_ros.stream.input_frame import InputFrame  # noqa: PLC0415
    from gct_stream_ros.stream.result import FrameType  # noqa: PLC0415

    in_w, in_h = (int(v) for v in args.input.split("x"))
    rng = np.random.default_rng(0)
    # smooth content so the JPEG size is realistic (noise would compress badly)
    yy, xx = np.mgrid[0:in_h, 0:in_w]
    rgb = np.stack([(127 + 100 * np.sin(xx / (9 + 4 * c) + yy / 17)).astype(np.uint8) for c in range(3)], -1)
    rgb = np.clip(rgb + rng.integers(0, 8, rgb.shape), 0, 255).astype(np.uint8)

    decode, decode_name = decoder()
    preprocess, pre_name = preprocessor(args.width)
    rows: list[tuple[str, str, list[float]]] = []
    for encoding in ("rgb8", "bgr8"):
        msg = _raw_image_message(rgb, encoding)
        times, decoded = _timed(lambda msg=msg: decode(msg), args.frames)
        rows.append((f"decode Image {encoding} {args.input}", decode_name, times))
    jpeg = _jpeg_message(rgb)
    times, _ = _timed(lambda: decode(jpeg), args.frames)
    rows.append((f"decode CompressedImage jpeg {args.input}", decode_name, times))
    times, image = _timed(lambda: preprocess(decoded), args.frames)
    rows.append((f"preprocess -> {tuple(image.shape)}", pre_name, times))

    height, width = image.shape[-2:]
    output = fake_step_output(height, width)
    frame = InputFrame(index=9, stamp_ns=123, image=image)

    def result() -> Any:
        estimate = FrameEstimate.from_step(output, 0, FrameType.KEYFRAME)
        return assemble_frame(frame, estimate, sequence=0, window=0)

    times, res = _timed(result, args.frames)
    rows.append(("result: StepOutput -> FrameResult (+world points)", "stream.frame_assembly", times))
    times, _ = _timed(lambda: (messages.depth_image(res, "cam"), messages.confidence_image(res, "cam"),
                               messages.camera_info(res, "cam")), args.frames)
    rows.append(("depth + confidence + camera_info messages", "ros.messages", times))
    eye = np.eye(4)
    times, cloud = _timed(lambda: messages.cloud_points(res, eye), args.frames)
    rows.append((f"cloud points ({len(cloud[0])} pts, decimation 1)", "ros.messages", times))
    times, _ = _timed(lambda: messages.point_cloud(cloud[0], cloud[1], 123, "map"), args.frames)
    rows.append(("PointCloud2 packing", "ros.messages", times))

    print(f"node overhead per frame, input {args.input} -> model {width}x{height}, {args.frames} frames, "
          f"torch threads {args.threads}\n")
    print("| stage | implementation | median (ms) | mean (ms) |\n|---|---|---|---|")
    total = 0.0
    for name, impl, times in rows:
        med = statistics.median(times)
        if "jpeg" not in name and "bgr8" not in name:
            total += med
        print(f"| {name} | {impl} | {med:.2f} | {statistics.fmean(times):.2f} |")
    print(f"| total (rgb8 decode + the rest) | | {total:.2f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
