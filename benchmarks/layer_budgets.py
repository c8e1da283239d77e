"""Per-layer allocator statistics and budgets of the budgeted policies on the smooth panning input.

Our model (``lingbot-map`` preset, the shared deterministic random weights) streams the smooth
panning textures of ``common.smooth_frames``; after every re-allocation the layers' statistics
(evict3r: attention-mass concentration; infinitevggt: key diversity) and budgets are recorded.
Prints the last ones and the spread of the budgets (max/min over layers). Runs on CPU at a small
image size, or on CUDA:

    .venv/bin/python benchmarks/layer_budgets.py --weights-py ../shared/parity/weights.py \\
        --height 126 --width 168 --frames 40 --device cpu --dtype float32
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ours_driver  # noqa: E402 - the script's folder is put on the path first
from common import add_model_arguments, benchmark_parser, smooth_frames, write_json  # noqa: E402


def run(policy: str, args: argparse.Namespace) -> dict:
    model = ours_driver.build_from_arguments(args, policy, args.budget)
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
    parser = benchmark_parser(__doc__)
    add_model_arguments(parser)
    # One camera-head iteration: faster, and the statistics recorded are the aggregator's cache's.
    parser.set_defaults(camera_iterations=1)
    parser.add_argument("--policies", default="evict3r,infinitevggt")
    parser.add_argument("--budget", type=float, default=1.0, help="cache.budget")
    parser.add_argument("--frames", type=int, default=40, help="streaming frames after the scale frames")
    args = parser.parse_args(argv)
    rows = [run(policy, args) for policy in args.policies.split(",")]
    for row in rows:
        print(f"\n## {row['policy']} (budget {row['budget']:g}, frame {row['frame']}, "
              f"{row['reallocations']} re-allocations): budgets max/min = {row['spread']:.2f}")
        print("| layer | statistic | budget (patch tokens) |\n|---|---|---|")
        for layer, (statistic, budget) in enumerate(zip(row["statistics"], row["budgets"])):
            print(f"| {layer} | {statistic:.4f} | {budget} |")
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
