"""Where a policy's step time goes, kernel by kernel, in the model as the node runs it (CUDA).

Streams the smooth panning input through the model (``--compile --graphs``: steps replayed from
CUDA graphs) once per cache policy, profiles ``--steps`` consecutive single-frame steps from step
``--at`` on (``torch.profiler``'s device activity records each kernel of a graph replay), and
reports per policy the step's span (its first kernel's start to its last kernel's end), the time
some kernel ran (busy) and the rest (the device idle between kernels), and each kernel's device
time and launches per step; then, against the first policy, the kernels that make the difference.
A policy's overhead over the window is the span's difference: the kernels it adds and the idle
time between them.

    python benchmarks/step_kernels.py --weights-py ../shared/parity/weights.py --compile --graphs \
        --policies sliding_window,infinitevggt,evict3r --json out/step_kernels.json
"""

from __future__ import annotations

import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ours_driver  # noqa: E402 - the script's folder is put on the path first
from common import add_model_arguments, benchmark_parser, print_table, smooth_frames, write_json  # noqa: E402
from long_stream import ping_pong  # noqa: E402

Kernel = tuple[float, float, str]
"""(start us, end us, name) of one kernel run."""

STEP_MARKER = "spin_kernel"
"""The kernel of ``torch.cuda._sleep``, launched before each profiled step: where one step's kernels end and
the next's begin (the device's idle time between two steps can be shorter than between two kernels
of an eagerly run step)."""
MARKER_CYCLES = 1000
"""The marker kernel's spin: about half a microsecond."""


def split_steps(kernels: Sequence[Kernel], marker: str = STEP_MARKER) -> list[list[Kernel]]:
    """The kernels grouped into steps, each begun by a kernel whose name holds ``marker`` (the markers
    and what ran before the first are left out)."""
    steps: list[list[Kernel]] = []
    for kernel in sorted(kernels):
        if marker in kernel[2]:
            steps.append([])
        elif steps:
            steps[-1].append(kernel)
    return [step for step in steps if step]


def busy_us(kernels: Sequence[Kernel]) -> float:
    """How long at least one of ``kernels`` ran (the union of their intervals)."""
    total, end = 0.0, float("-inf")
    for start, stop, _ in sorted(kernels):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def step_summary(steps: Sequence[Sequence[Kernel]]) -> dict[str, float]:
    """Mean span, busy and idle time and kernel count of ``steps``, us."""
    spans = [max(stop for _, stop, _ in step) - min(start for start, _, _ in step) for step in steps]
    busy = [busy_us(step) for step in steps]
    return {"span_us": statistics.mean(spans), "busy_us": statistics.mean(busy),
            "idle_us": statistics.mean(spans) - statistics.mean(busy),
            "kernels": statistics.mean(len(step) for step in steps)}


def kernel_table(steps: Sequence[Sequence[Kernel]]) -> dict[str, tuple[float, float]]:
    """Kernel name -> (device us per step, launches per step)."""
    times: dict[str, float] = defaultdict(float)
    launches: dict[str, int] = defaultdict(int)
    for step in steps:
        for start, stop, name in step:
            times[name] += stop - start
            launches[name] += 1
    return {name: (times[name] / len(steps), launches[name] / len(steps)) for name in times}


def difference(table: dict[str, tuple[float, float]],
               baseline: dict[str, tuple[float, float]]) -> list[dict[str, object]]:
    """Per kernel name, ``table``'s device time and launches per step less ``baseline``'s, largest
    difference first."""
    rows = []
    for name in set(table) | set(baseline):
        us, launches = table.get(name, (0.0, 0.0))
        base_us, base_launches = baseline.get(name, (0.0, 0.0))
        rows.append({"kernel": name, "us": us, "baseline_us": base_us, "delta_us": us - base_us,
                     "launches": launches, "baseline_launches": base_launches})
    return sorted(rows, key=lambda row: (-abs(row["delta_us"]), row["kernel"]))


def profiled_stream(streamer: ours_driver.Streamer, policy: str, budget: float | None, frames: torch.Tensor,
                    order: list[int], first: int,
                    count: int) -> tuple[list[float], list[Kernel], int | None]:
    """ms per step of ``policy``'s stream, the kernels of its steps ``first`` .. ``first + count - 1``
    (counted after the scale frames' step) and how many of those were replayed from a CUDA graph
    (None without ``--graphs``)."""
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
    seen, replays = [0], []

    def keep(_output: object) -> None:  # called after each step, the scale frames' first
        graphs = streamer.model.step_graphs
        if seen[0] == first:
            torch.cuda.synchronize()
            profiler.start()
        if seen[0] in (first, first + count) and graphs is not None:
            replays.append(graphs.replays)
        if seen[0] == first + count:
            torch.cuda.synchronize()
            profiler.stop()
        elif seen[0] >= first:
            torch.cuda._sleep(MARKER_CYCLES)
        seen[0] += 1

    milliseconds = streamer.stream(policy, budget, frames, order, keep=keep)
    kernels = [(event.time_range.start, event.time_range.end, event.name) for event in profiler.events()
               if event.device_type == torch.autograd.DeviceType.CUDA]
    return milliseconds, kernels, replays[1] - replays[0] if replays else None


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    add_model_arguments(parser)
    parser.add_argument("--policies", default="sliding_window,infinitevggt,evict3r",
                        help="comma list; the first is the baseline of the difference")
    parser.add_argument("--budget", type=float, default=1.0, help="cache.budget of the budgeted policies")
    parser.add_argument("--at", type=int, default=120, help="the first profiled step after the scale frames")
    parser.add_argument("--steps", type=int, default=3, help="steps profiled")
    parser.add_argument("--distinct", type=int, default=160, help="distinct frames of the panning input")
    parser.add_argument("--top", type=int, default=25, help="kernels listed per difference")
    ours_driver.add_streamer_arguments(parser)
    args = parser.parse_args(argv)
    if args.at < 2 or args.steps < 1:
        parser.error("--at must be >= 2 (the median step is taken before it) and --steps >= 1")
    if args.device != "cuda" or not torch.cuda.is_available():
        raise SystemExit("step_kernels.py profiles CUDA kernels: it needs --device cuda and a GPU")
    frames = smooth_frames(args.distinct, args.height, args.width).to(args.device)
    order = ping_pong(args.distinct, args.scale_frames + args.at + args.steps + 1)[args.scale_frames:]
    streamer = ours_driver.Streamer(args)
    policies = [policy for policy in args.policies.split(",") if policy]
    summaries, tables = [], {}
    for policy in policies:
        budget = None if policy == "sliding_window" else args.budget
        milliseconds, kernels, replayed = profiled_stream(streamer, policy, budget, frames, order, args.at,
                                                          args.steps)
        steps = split_steps(kernels)
        tables[policy] = kernel_table(steps)
        summaries.append({"policy": policy, "budget": budget, "steps_profiled": len(steps),
                          "replayed": replayed,
                          "median_ms": statistics.median(milliseconds[args.at // 2:args.at]),  # not profiled
                          **step_summary(steps)})
    print_table(summaries, [("policy", "policy", ""), ("median ms/frame", "median_ms", ".2f"),
                            ("span us", "span_us", ".0f"), ("busy us", "busy_us", ".0f"),
                            ("idle us", "idle_us", ".0f"), ("kernels", "kernels", ".0f"),
                            ("steps profiled", "steps_profiled", "d"),
                            ("replayed from a graph", "replayed", "")])
    differences = {}
    for policy in policies[1:]:
        rows = difference(tables[policy], tables[policies[0]])
        differences[policy] = rows
        print(f"\n{policy} against {policies[0]}, device us per step:")
        print_table([{**row, "kernel": str(row["kernel"])[:90]} for row in rows[:args.top]],
                    [("kernel", "kernel", ""), ("us", "us", ".1f"), ("baseline us", "baseline_us", ".1f"),
                     ("difference", "delta_us", "+.1f"), ("launches", "launches", ".0f"),
                     ("baseline launches", "baseline_launches", ".0f")])
    write_json(args.json, {"args": vars(args), "summaries": summaries, "kernels": tables,
                           "differences": differences})
    return 0


if __name__ == "__main__":
    sys.exit(main())
