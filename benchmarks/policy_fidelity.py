"""Fidelity and speed of the budgeted policies against the full sliding window on the same input.

Our model (shared deterministic random weights) streams the smooth panning input
(``common.smooth_frames``) once with the sliding window (the yardstick, saved to ``--reference`` and
reused by later processes) and once per policy and ``cache.budget``; with ``--same-tokens`` also
with the sliding window shrunk to each budget's tokens (the plain cache a budget competes with:
the policy's overhead is its time minus that one's). Per run: ms per frame (median of the
streaming steps past the first quarter, one sync per frame), and the deviation from the sliding
window: camera-centre RMSE after a Sim(3) (Umeyama) alignment of the centres, relative to the
length of the sliding window's trajectory, and the depth abs-rel ``mean |d - d_sw| / d_sw``.

One model is built (and compiled) per process; each run gives it a new cache (``use_cache``).
Run one policy per process for clean timings:

    python benchmarks/policy_fidelity.py --weights-py .shared/parity/weights.py --reference out/sw.pt \\
        --policies evict3r --budgets 1,0.5,0.25 --frames 320 --compile --graphs
"""

from __future__ import annotations

import os
import statistics
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ours_driver  # noqa: E402 - the script's folder is put on the path first
from common import (  # noqa: E402
    add_model_arguments,
    benchmark_parser,
    same_token_window,
    smooth_frames,
    write_json,
)


def run_policy(streamer: ours_driver.Streamer, frames: torch.Tensor, policy: str, budget: float | None,
               window: int | None = None) -> dict:
    """Camera centres ``[N, 3]``, depths ``[N, H, W]`` and the median and mean ms per frame of one stream
    (its last three quarters: the graphs captured; the mean counts a cache that evicts every few frames
    fairly)."""
    outputs: list = []
    milliseconds = streamer.stream(policy, budget, frames, range(streamer.args.scale_frames, frames.shape[0]),
                                   window, keep=outputs.append)
    return {"centres": torch.cat([o.pose_enc[:, :3] for o in outputs]).double().cpu(),
            "depth": torch.cat([o.depth for o in outputs]).float().cpu(),
            "ms": statistics.median(milliseconds[len(milliseconds) // 4:]),
            "mean_ms": statistics.mean(milliseconds[len(milliseconds) // 4:])}


def umeyama_rmse(source: np.ndarray, target: np.ndarray) -> float:
    """RMSE of ``source`` ``[N, 3]`` after the least-squares similarity onto ``target`` (Umeyama 1991)."""
    mean_source, mean_target = source.mean(0), target.mean(0)
    centred_source, centred_target = source - mean_source, target - mean_target
    covariance = centred_target.T @ centred_source / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.eye(3)
    sign[2, 2] = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = u @ sign @ vt
    variance = (centred_source**2).sum() / len(source)
    scale = float(np.trace(np.diag(singular) @ sign) / variance) if variance > 0 else 1.0
    aligned = scale * centred_source @ rotation.T + mean_target
    return float(np.sqrt(((aligned - target) ** 2).sum(1).mean()))


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    add_model_arguments(parser)
    parser.add_argument("--reference", required=True,
                        help="the sliding window's outputs (.pt), made if absent")
    parser.add_argument("--policies", default="evict3r,infinitevggt", help="comma list; may be empty")
    parser.add_argument("--budgets", default="1,0.5,0.25", help="comma list of cache.budget fractions")
    parser.add_argument("--same-tokens", action="store_true",
                        help="also the sliding window shrunk to each budget's tokens (budgets below 1)")
    parser.add_argument("--frames", type=int, default=320, help="frames in all, scale frames included")
    ours_driver.add_streamer_arguments(parser)
    args = parser.parse_args(argv)
    frames = smooth_frames(args.frames, args.height, args.width).to(args.device)
    streamer = ours_driver.Streamer(args)
    if os.path.exists(args.reference):
        reference = torch.load(args.reference)
    else:
        reference = run_policy(streamer, frames, "sliding_window", None)
        torch.save(reference, args.reference)
    centres = reference["centres"].numpy()
    length = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())
    print(f"sliding window: {reference['ms']:.1f} ms/frame, trajectory length {length:.4g}\n")
    print("| policy | budget | window | ms/frame | mean ms/frame | centre RMSE / length (Sim(3)) "
          "| depth abs-rel |", flush=True)
    print("|---|---|---|---|---|---|---|", flush=True)
    budgets = [float(b) for b in args.budgets.split(",")]
    runs = [(policy, budget, None) for policy in filter(None, args.policies.split(",")) for budget in budgets]
    if args.same_tokens:
        runs += [("sliding_window", budget, same_token_window(budget, args.scale_frames, args.window))
                 for budget in budgets if budget < 1]
    rows = []
    for policy, budget, window in runs:
        run = run_policy(streamer, frames, policy, None if policy == "sliding_window" else budget, window)
        rmse = umeyama_rmse(run["centres"].numpy(), centres)
        abs_rel = float(((run["depth"] - reference["depth"]).abs() / reference["depth"].abs()
                         .clamp(min=1e-6)).mean())
        relative = rmse / length if length > 0 else float("nan")
        window = args.window if window is None else window
        rows.append({"policy": policy, "budget": budget, "window": window, "ms": run["ms"],
                     "mean_ms": run["mean_ms"],
                     "sw_ms": reference["ms"], "centre_rmse_rel": relative, "depth_abs_rel": abs_rel})
        print(f"| {policy} | {budget:g} | {window} | {run['ms']:.1f} | {run['mean_ms']:.1f} | {relative:.2e} "
              f"| {abs_rel:.2e} |",
              flush=True)
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
