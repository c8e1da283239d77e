"""The model step's time along a long stream, per cache policy: early, and past ``cache.max_frames``.

A stream longer than ``cache.max_frames`` (1024 by default) keeps the specials of 1024 frames and
recycles one frame per step; the short runs of ``policy_fidelity.py`` (320 frames) see neither.
Streams ``--frames`` frames of the smooth panning input (``--distinct`` frames played forwards and
backwards, so that the camera keeps moving without a cut) through the model as the node runs it
(``--compile --graphs``), one cache per policy at ``cache.budget`` ``--budget``, and reports per span
of frames (scale frames not counted) the median, mean and maximum ms per frame, the steps that took
over twice the stream's median (those that ran without a CUDA graph: a new graph key, a re-allocation
of the budgets that moved a layer; or captured one) and the mean of the others: the steady cost of
a frame, also of a cache whose steps cycle (``cache.evict_every``).

    python benchmarks/long_stream.py --weights-py ../shared/parity/weights.py --frames 1300 --compile \
        --graphs --policies sliding_window,infinitevggt,evict3r --json out/long_stream.json
"""

from __future__ import annotations

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ours_driver  # noqa: E402 - the script's folder is put on the path first
from common import add_model_arguments, benchmark_parser, print_table, smooth_frames, write_json  # noqa: E402


def ping_pong(distinct: int, count: int) -> list[int]:
    """``count`` frame indices that run through ``distinct`` frames forwards, then backwards, and again."""
    period = 2 * distinct
    return [i % period if i % period < distinct else period - 1 - i % period for i in range(count)]


def spans(text: str, steps: int) -> list[tuple[int, int]]:
    """``"80:320,1040:"`` -> [(80, 320), (1040, steps)], each within the ``steps`` streamed."""
    bounds = []
    for item in filter(None, text.split(",")):
        first, _, last = item.partition(":")
        bounds.append((int(first), min(int(last) if last else steps, steps)))
    return [(first, last) for first, last in bounds if first < last]


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    add_model_arguments(parser)
    parser.add_argument("--frames", type=int, default=1300, help="frames in all, scale frames included")
    parser.add_argument("--distinct", type=int, default=160, help="distinct frames of the panning input")
    parser.add_argument("--policies", default="sliding_window,infinitevggt,evict3r")
    parser.add_argument("--budget", type=float, default=1.0, help="cache.budget of the budgeted policies")
    parser.add_argument("--spans", default="80:320,320:600,600:1000,1040:",
                        help="comma list of first:last steps (after the scale frames) to report")
    ours_driver.add_streamer_arguments(parser)
    args = parser.parse_args(argv)
    frames = smooth_frames(args.distinct, args.height, args.width).to(args.device)
    order = ping_pong(args.distinct, args.frames)[args.scale_frames:]
    streamer = ours_driver.Streamer(args)
    rows = []
    for policy in filter(None, args.policies.split(",")):
        budget = None if policy == "sliding_window" else args.budget
        milliseconds = streamer.stream(policy, budget, frames, order)
        typical = statistics.median(milliseconds)
        for first, last in spans(args.spans, len(milliseconds)):
            part = milliseconds[first:last]
            steady = [ms for ms in part if ms <= 2 * typical]
            rows.append({"policy": policy, "budget": budget, "steps": f"{first}-{last}",
                         "median_ms": statistics.median(part), "mean_ms": statistics.mean(part),
                         "steady_mean_ms": statistics.mean(steady), "max_ms": max(part),
                         "slow_steps": len(part) - len(steady)})
    print_table(rows, [("policy", "policy", ""), ("steps", "steps", ""),
                       ("median ms/frame", "median_ms", ".2f"), ("mean ms/frame", "mean_ms", ".2f"),
                       ("mean of the others", "steady_mean_ms", ".2f"), ("max ms", "max_ms", ".0f"),
                       ("steps over 2x the median", "slow_steps", "d")])
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
