"""Per-frame GPU time of the model step: ours and (optionally) the reference, side by side.

Defaults are the reference profiler's (``gct_profile.py``): ViT-L ``lingbot-map`` preset, random
weights, bf16, 378x504 input, 8 scale frames, sliding window 64, camera head 4 iterations, 320
frames (8 scale + 312 streaming), one CUDA event pair and a sync per frame.

    python benchmarks/model_step.py --weights-py shared/parity/weights.py \
        --backend dense,flashinfer --compile none,compiled --reference .ref --json out.json

Each (backend, compile) variant of ours runs in turn in the same process; the reference runs
last (its torch.compile state is global). Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402 - the script's folder is put on the path first
    RunTimes,
    device_info,
    memory_snapshot,
    print_table,
    synthetic_frames,
    write_json,
)

COLUMNS = [
    ("variant", "label", ""),
    ("phase 1 (ms)", "phase1_ms", ".1f"),
    ("stream mean (ms)", "stream_mean_ms", ".2f"),
    ("median (ms)", "stream_median_ms", ".2f"),
    ("p90 (ms)", "stream_p90_ms", ".2f"),
    ("FPS (stream)", "stream_fps", ".1f"),
    ("global FPS", "global_fps", ".1f"),
    ("host (ms)", "host_mean_ms", ".2f"),
    ("GPU busy (ms)", "gpu_busy_ms_per_frame", ".1f"),
    ("peak (MiB)", "memory_mib.peak_allocated", ".0f"),
    ("steady (MiB)", "memory_mib.allocated", ".0f"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights-py", required=True,
                   help="path of shared/parity/weights.py (fill_deterministic)")
    p.add_argument("--seed", type=int, default=20261122)
    p.add_argument("--frames", type=int, default=320)
    p.add_argument("--scale-frames", type=int, default=8)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--camera-iterations", type=int, default=4)
    p.add_argument("--height", type=int, default=378)
    p.add_argument("--width", type=int, default=504)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--backend", default="flashinfer",
                   help="comma list of our cache backends: dense, paged_gather, flashinfer, flashinfer_fa3")
    p.add_argument("--policy", default="sliding_window", help="cache policy of our model")
    p.add_argument("--compile", default="none",
                   help="comma list: none (eager), compiled (GCTModel.compile_regions, as model.compile)")
    p.add_argument("--variants", default="",
                   help="comma list of backend:compile pairs (overrides --backend x --compile)")
    p.add_argument("--keyframe-interval", type=int, default=1)
    p.add_argument("--reference", default="", help="directory holding lingbot_map/ (runs the reference too)")
    p.add_argument("--reference-backend", default="flashinfer", help="comma list: flashinfer, sdpa")
    p.add_argument("--reference-compile", default="1", help="comma list of 0/1 (eager / its compile targets)")
    p.add_argument("--reference-only", action="store_true", help="skip our model")
    p.add_argument("--warm-frames", type=int, default=10, help="streaming frames per warm-up pass")
    p.add_argument("--profile-frames", type=int, default=0,
                   help="after timing, record this many streaming frames with torch.profiler "
                        "and print the top CUDA kernels (ours only)")
    p.add_argument("--json", default="", help="write all results here")
    return p.parse_args(argv)


def run_ours(args: argparse.Namespace, frames: torch.Tensor, backend: str, level: str) -> dict[str, Any]:
    import ours_driver  # noqa: PLC0415 - imports our model; not needed for --reference-only

    dtype = getattr(torch, args.dtype)
    t0 = time.perf_counter()
    _, half_depth_head, half_camera_head = ours_driver.split_level(level)
    model = ours_driver.build_ours(args.weights_py, args.seed, backend=backend, policy=args.policy,
                                   scale_frames=args.scale_frames, window=args.window,
                                   camera_iterations=args.camera_iterations, dtype=dtype,
                                   max_frames=args.frames + 100, half_depth_head=half_depth_head,
                                   half_camera_head=half_camera_head)
    build_s = time.perf_counter() - t0
    label = f"ours {backend} {level}"
    print(f"[{label}] built and filled in {build_s:.1f}s", flush=True)
    t0 = time.perf_counter()
    ours_driver.warm(model, frames, args.scale_frames, passes=1, stream_frames=args.warm_frames)
    compile_report: dict[str, Any] = {}
    if level != "none":
        compile_report = ours_driver.apply_compile(model, level)
        print(f"[{label}] compile: {compile_report}", flush=True)
        # First compiled pass captures the graphs, the next ones replay so that allocator
        # and graph pools reach the state the timed run will see (as the reference does).
        ours_driver.warm(model, frames, args.scale_frames, passes=3, stream_frames=args.warm_frames)
    if model.step_graphs is not None:
        # CUDA graphs are captured per key (window filling / full, camera buffer size): two whole
        # passes capture every key the timed run meets, as a node running for a while has
        ours_driver.warm(model, frames, args.scale_frames, passes=2,
                         stream_frames=frames.shape[0] - args.scale_frames)
    warm_s = time.perf_counter() - t0
    run = ours_driver.profile(model, frames, args.scale_frames, label, args.keyframe_interval)
    run.extra |= {"build_s": build_s, "warm_s": warm_s, "backend": backend, "compile": level,
                  "policy": args.policy, "compile_report": compile_report,
                  "cache_stats": ours_driver.cache_stats(model)}
    if model.step_graphs is not None:
        graphs = model.step_graphs
        run.extra["step_graphs"] = {"captures": graphs.captures, "replays": graphs.replays}
    summary = run.summary()
    if args.profile_frames:
        prof = ours_driver.kernel_profile(model, frames, args.scale_frames, args.profile_frames)
        summary["top_kernels"] = prof.pop("table")
        summary["top_host_ops"] = prof.pop("host_table")
        summary |= prof
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return summary


def run_reference(args: argparse.Namespace, frames: torch.Tensor, backend: str,
                  compiled: bool) -> dict[str, Any]:
    import reference_driver as ref  # noqa: PLC0415

    dtype = getattr(torch, args.dtype)
    label = f"reference {backend} {'compiled' if compiled else 'eager'}"
    t0 = time.perf_counter()
    model = ref.build_reference(args.reference, backend, max_frame_num=args.frames + 100,
                                window=args.window, scale_frames=args.scale_frames,
                                camera_iterations=args.camera_iterations)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref.warm_reference(model, frames.cuda(), args.scale_frames, dtype, passes=1,
                       stream_frames=args.warm_frames)
    if compiled:
        ref.compile_reference(model)
        ref.warm_reference(model, frames.cuda(), args.scale_frames, dtype, passes=3,
                           stream_frames=args.warm_frames)
    else:
        ref.warm_reference(model, frames.cuda(), args.scale_frames, dtype, passes=1,
                           stream_frames=args.warm_frames)
    warm_s = time.perf_counter() - t0
    run: RunTimes = ref.profile_reference(model, frames, args.scale_frames, dtype, label)
    run.extra |= {"build_s": build_s, "warm_s": warm_s, "backend": backend, "compiled": compiled}
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return run.summary()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("model_step.py needs a CUDA device")
    info = device_info()
    print(info, flush=True)
    frames = synthetic_frames(args.frames, args.height, args.width)
    results: list[dict[str, Any]] = []
    payload: dict[str, Any] = {"device": info, "args": vars(args), "results": results}
    if not args.reference_only:
        pairs = ([tuple(v.split(":")) for v in args.variants.split(",")] if args.variants else
                 [(b, c) for b in args.backend.split(",") for c in args.compile.split(",")])
        for backend, level in pairs:
            try:
                results.append(run_ours(args, frames, backend, level))
            except Exception as exc:  # keep the other variants' numbers
                traceback.print_exc()
                results.append({"label": f"ours {backend} {level}", "error": repr(exc)})
            write_json(args.json, payload)
    if args.reference:
        for backend in args.reference_backend.split(","):
            for compiled in args.reference_compile.split(","):
                try:
                    results.append(run_reference(args, frames, backend, compiled == "1"))
                except Exception as exc:
                    traceback.print_exc()
                    results.append({"label": f"reference {backend} compiled={compiled}", "error": repr(exc)})
                write_json(args.json, payload)
    payload["memory_at_exit_mib"] = memory_snapshot()
    print(f"\n{info.get('gpu')}, {args.height}x{args.width}, {args.frames} frames "
          f"({args.scale_frames} scale), window {args.window}, camera iterations "
          f"{args.camera_iterations}, {args.dtype}\n")
    payload["table"] = print_table([r for r in results if "error" not in r], COLUMNS)
    for r in results:
        if "top_kernels" in r:
            print(f"\ntop CUDA kernels, {r['label']}:\n{r['top_kernels']}")
            print(f"\ntop host ops, {r['label']}:\n{r['top_host_ops']}")
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
