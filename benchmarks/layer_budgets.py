"""Per-layer allocator statistics and budgets of the budgeted policies on the smooth panning input.

Our model (``lingbot-map`` preset, the shared deterministic random weights) streams the smooth
panning textures of ``gpu_parity.py``; after every re-allocation the layers' statistics
(evict3r: attention-mass concentration; infinitevggt: key diversity) and budgets are recorded.
Prints the last ones and the spread of the budgets (max/min over layers). Runs on CPU at a small
image size, or on CUDA:

    .venv/bin/python benchmarks/layer_budgets.py --weights-py ../shared/parity/weights.py \\
        --height 126 --width 168 --frames 40 --device cpu --dtype float32
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ours_driver  # noqa: E402 - the script's folder is put on the path first
from gpu_parity import smooth_frames  # noqa: E402


def run(policy: str, args: argparse.Namespace) -> dict:
    model = ours_driver.build_ours(args.weights_py, args.seed, backend="auto", policy=policy,
                                   scale_frames=args.scale_frames, window=args.window, camera_iterations=1,
                                   dtype=getattr(torch, args.dtype), device=args.device, budget=args.budget,
                                   preset=args.preset)
    frames = smooth_frames(args.scale_frames + args.frames, args.height, args.width).to(args.device)
    ours_driver.step(model, frames[:args.scale_frames], args.scale_frames)
    history = []
    for index in range(args.scale_frames, frames.shape[0]):
        ours_driver.step(model, frames[index:index + 1], args.scale_frames)
        budgets = model.cache_stats().budget_tokens_per_layer
        if not history or budgets != history[-1]["budgets"]:
            history.append({"frame": index + 1, "budgets": budgets,
                            "statistics": model.cache.layer_statistics()})
    last = history[-1]
    return {"policy": policy, "budget": args.budget, "reallocations": len(history) - 1,
            "spread": max(last["budgets"]) / min(last["budgets"]), **last}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-py", required=True, help="shared/parity/weights.py")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="lingbot-map")
    parser.add_argument("--policies", default="evict3r,infinitevggt")
    parser.add_argument("--budget", type=float, default=1.0, help="cache.budget")
    parser.add_argument("--frames", type=int, default=40, help="streaming frames after the scale frames")
    parser.add_argument("--scale-frames", type=int, default=8)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--height", type=int, default=378)
    parser.add_argument("--width", type=int, default=504)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--json", default="", help="also write the rows to this file")
    args = parser.parse_args(argv)
    rows = [run(policy, args) for policy in args.policies.split(",")]
    for row in rows:
        print(f"\n## {row['policy']} (budget {row['budget']:g}, frame {row['frame']}, "
              f"{row['reallocations']} re-allocations): budgets max/min = {row['spread']:.2f}")
        print("| layer | statistic | budget (patch tokens) |\n|---|---|---|")
        for layer, (statistic, budget) in enumerate(zip(row["statistics"], row["budgets"])):
            print(f"| {layer} | {statistic:.4f} | {budget} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
