"""Time of one streaming step of the global KV cache alone, per policy (CPU or GPU).

Drives ``build_cache`` like the model does: a phase-1 step of the scale frames, then single-frame
STORE steps with random q/k/v for every global layer; reports the median step time over the
second half of the frames, the cached tokens per layer and the bytes the cache holds.
The defaults are CPU-sized; ``--layers 24 --heads 16 --patches 972 --device cuda --dtype bfloat16``
are the full model's at 378x504.

    .venv/bin/python benchmarks/cache_step.py --policies sliding_window,evict3r,infinitevggt
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.cache.factory import CacheSettings, build_cache

SPECIALS = 6


def step_time_ms(policy: str, args: argparse.Namespace) -> tuple[float, int, int]:
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    settings = CacheSettings(policy=policy, scale_frames=args.scale_frames, sliding_window=args.window,
                             max_frames=args.max_frames)
    cache = build_cache(settings, args.layers, args.heads, 64, device=device, dtype=dtype)
    generator = torch.Generator(device=device).manual_seed(0)

    def step(num_frames: int, mode: StepMode) -> None:
        shape = (num_frames, SPECIALS + args.patches, args.heads, 64)
        cache.begin_step(num_frames, shape[1], mode)
        for layer in range(args.layers):
            q, k, v = (torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(3))
            cache.attend(layer, q, k, v)
        cache.end_step()

    step(args.scale_frames, StepMode.STORE)
    times = []
    for _ in range(args.frames):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(1, StepMode.STORE)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(1000.0 * (time.perf_counter() - start))
    stats = cache.stats()
    return statistics.median(times[len(times) // 2:]), stats.tokens_max, stats.bytes_allocated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default="sliding_window,evict3r,infinitevggt")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--patches", type=int, default=120, help="patch tokens per frame")
    parser.add_argument("--scale-frames", type=int, default=8)
    parser.add_argument("--window", type=int, default=16, help="sliding window (frames; sets the budgets)")
    parser.add_argument("--max-frames", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"cache step, {args.layers} layers x {args.heads} heads x 64, {args.patches} patches + {SPECIALS} "
          f"specials per frame, {args.frames} frames, {args.device} {args.dtype}\n")
    print("| policy | median step (ms) | tokens per layer (max) | bytes held |\n|---|---|---|---|")
    for policy in args.policies.split(","):
        milliseconds, tokens, held = step_time_ms(policy, args)
        print(f"| {policy} | {milliseconds:.1f} | {tokens} | {held / 2**20:.1f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
