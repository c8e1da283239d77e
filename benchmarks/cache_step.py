"""Time and memory of the streaming step of the global KV cache alone, per policy and budget (CPU or GPU).

Drives ``build_cache`` like the model does: a phase-1 step of the scale frames, then single-frame
STORE steps with random q/k/v for every global layer. Reports, per policy and budget (a fraction
of the sliding window's patch tokens, ``cache.budget``): the median step time over the second
half of the frames, the keys a query attends to (min/max over layers), the spread of the layer
budgets (max/min), the bytes the cache holds and, on CUDA, the memory the caching allocator has
allocated and reserved at given frames. ``--same-tokens`` adds the sliding window shrunk to the
same number of patch tokens (window = budget x (scale + window) - scale), the yardstick of the
policy overhead. The defaults are CPU-sized; ``--layers 24 --heads 16 --patches 972 --device cuda
--dtype bfloat16`` are the full model's at 378x504. Run one policy per process for memory numbers
that do not depend on what ran before (``--policies evict3r``).

    .venv/bin/python benchmarks/cache_step.py --policies sliding_window,evict3r,infinitevggt --budgets 1,0.5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.cache.factory import CacheSettings, build_cache

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import MIB, benchmark_parser, same_token_window, write_json  # noqa: E402 - the script's folder is put on the path first

SPECIALS = 6


def run(policy: str, budget: float, window: int, args: argparse.Namespace) -> dict:
    """One cache driven for ``args.frames`` frames; its timings, sizes and memory."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    settings = CacheSettings(policy=policy, scale_frames=args.scale_frames, sliding_window=window,
                             max_frames=args.max_frames, budget=budget)
    cache = build_cache(settings, args.layers, args.heads, 64, device=device, dtype=dtype)
    generator = torch.Generator(device=device).manual_seed(0)
    memory_at = {int(frame) for frame in args.memory_at.split(",") if frame}

    def step(num_frames: int, mode: StepMode) -> None:
        shape = (num_frames, SPECIALS + args.patches, args.heads, 64)
        cache.begin_step(num_frames, shape[1], mode)
        for layer in range(args.layers):
            q, k, v = (torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(3))
            cache.attend(layer, q, k, v)
        cache.end_step()

    step(args.scale_frames, StepMode.STORE)
    times, memory = [], []
    last = args.scale_frames + args.frames
    for frame in range(args.scale_frames, last):
        if args.profile and frame == last - args.profile:
            profiler = _start_profiler(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(1, StepMode.STORE)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1000.0 * (time.perf_counter() - start))
        if frame + 1 in memory_at and device.type == "cuda":
            memory.append({"frame": frame + 1, "allocated_mib": torch.cuda.memory_allocated() / MIB,
                           "reserved_mib": torch.cuda.memory_reserved() / MIB,
                           "median_ms": statistics.median(times[-100:])})
            print(f"<!-- {policy} budget {budget:g} @{frame + 1}: {memory[-1]} -->", flush=True)
    if args.profile:
        _report_profile(profiler, f"{policy} budget {budget:g}", args.profile, args.layers, device)
    stats = cache.stats()
    budgets = stats.budget_tokens_per_layer
    return {"policy": policy, "budget": budget, "window": window,
            "median_ms": statistics.median(times[len(times) // 2:]),
            "tokens_min": stats.tokens_min, "tokens_max": stats.tokens_max,
            "budget_spread": max(budgets) / min(budgets) if budgets else 1.0,
            "budgets": budgets, "held_mib": stats.bytes_allocated / MIB, "memory": memory}


def _start_profiler(device: torch.device) -> torch.profiler.profile:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities)
    profiler.start()
    return profiler


def _report_profile(profiler: torch.profiler.profile, title: str, steps: int, layers: int,
                    device: torch.device) -> None:
    """Stop ``profiler`` and print its top operators/kernels by device time and by host time."""
    profiler.stop()
    events = profiler.key_averages()
    device_keys = [key for key in ("self_device_time_total", "self_cuda_time_total")
                   if device.type == "cuda" and len(events) and hasattr(events[0], key)]
    launches = sum(event.count for event in events if event.key.startswith(("cudaLaunchKernel", "cuLaunch")))
    print(f"\n## profile: {title}, last {steps} steps ({launches / steps / layers:.1f} kernel launches "
          f"per layer step)\n", flush=True)
    if device_keys:
        print(events.table(sort_by=device_keys[0], row_limit=25, max_name_column_width=70), flush=True)
    print(events.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--policies", default="sliding_window,evict3r,infinitevggt")
    parser.add_argument("--budgets", default="1.0", help="comma list of cache.budget fractions")
    parser.add_argument("--same-tokens", action="store_true",
                        help="also time the sliding window shrunk to each budget's patch tokens")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--memory-at", default="", help="comma list of frames to record CUDA memory at")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--patches", type=int, default=120, help="patch tokens per frame")
    parser.add_argument("--scale-frames", type=int, default=8)
    parser.add_argument("--window", type=int, default=16, help="sliding window (frames; sets the budgets)")
    parser.add_argument("--max-frames", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--profile", type=int, default=0,
                        help="profile the last N steps of each run (torch.profiler) and print the top ops")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"cache step, {args.layers} layers x {args.heads} heads x 64, {args.patches} patches + {SPECIALS} "
          f"specials per frame, window {args.window}, {args.frames} frames, {args.device} {args.dtype}\n")
    runs = []
    for budget in (float(b) for b in args.budgets.split(",")):
        for policy in args.policies.split(","):
            if policy == "sliding_window":
                if budget == 1.0:
                    runs.append((policy, budget, args.window))
            else:
                runs.append((policy, budget, args.window))
        if args.same_tokens and budget != 1.0:
            runs.append(("sliding_window", budget, same_token_window(budget, args.scale_frames, args.window)))
    print("| policy | budget | window | median step (ms) | keys per layer (min-max) | layer budgets max/min "
          "| bytes held | CUDA allocated / reserved (MiB) at frames |", flush=True)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for policy, budget, window in runs:
        row = run(policy, budget, window, args)
        rows.append(row)
        memory = ", ".join(f"@{m['frame']}: {m['allocated_mib']:.0f} / {m['reserved_mib']:.0f}"
                           for m in row["memory"]) or "-"
        print(f"| {row['policy']} | {row['budget']:g} | {row['window']} | {row['median_ms']:.1f} | "
              f"{row['tokens_min']}-{row['tokens_max']} | {row['budget_spread']:.2f} | "
              f"{row['held_mib']:.0f} MiB | {memory} |", flush=True)
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
