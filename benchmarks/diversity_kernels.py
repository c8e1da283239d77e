"""infinitevggt's fused diversity ranking (``cache/policies/fused_diversity.py``) at the issue's shape (CUDA).

One layer's pool as the budgeted cache holds it at the default budget: ``--slots`` of storage,
``--in-use`` of them in use (the scale frames' patches first, a frame's specials after its
patches), 16 heads x 64, bf16, frames of a long stream. Times ``diversity_ranking`` as a
fixed-shape step calls it (the count on the device, the whole storage), as an eagerly run step
does (the prefix in use), both summing the candidates from scratch, and as the budgeted cache
calls it, with the candidates' sums kept across steps (``candidate_sums.py``: only the ranking
pass): per kernel (``torch.profiler``, device time), and the whole call replayed from a CUDA
graph (CUDA events); reports the bytes each pass reads and the bandwidth. Then the exact select of
the slots a step evicts (``fused_select.smallest``, a frame's patches) from that ranking: per head
(16 rows, infinitevggt's) and from one row (a head-shared ranking, evict3r's), timed the same ways.

    python benchmarks/diversity_kernels.py --json benchmarks/results/diversity_kernels_h200.json
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import device_info, print_table, write_json  # noqa: E402

from gct_stream_ros.cache.policies import fused_diversity, fused_select  # noqa: E402
from gct_stream_ros.cache.policies.token_pool import PATCH, SCALE_PATCH, SPECIAL  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slots", type=int, default=108_000, help="the pool's capacity")
    p.add_argument("--in-use", type=int, default=71_000)
    p.add_argument("--patches", type=int, default=972, help="patches per frame")
    p.add_argument("--specials", type=int, default=6)
    p.add_argument("--scale-frames", type=int, default=8)
    p.add_argument("--first-frame", type=int, default=2_000, help="the oldest streamed frame kept")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", default="")
    return p.parse_args(argv)


def pool_layer(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys ``[C, H, 64]``, frames and states ``[C, H]`` of a full layer (see the module docstring)."""
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(args.slots, args.heads, 64, generator=gen).bfloat16()
    frame_size = args.patches + args.specials
    slot = torch.arange(args.slots)
    frame = slot // frame_size
    state = torch.where(slot % frame_size < args.patches, PATCH, SPECIAL)
    state = torch.where((frame < args.scale_frames) & (state == PATCH), SCALE_PATCH, state)
    frame = torch.where(frame < args.scale_frames, frame, frame + args.first_frame)
    return (keys.cuda(), frame.int().unsqueeze(1).expand(-1, args.heads).contiguous().cuda(),
            state.to(torch.uint8).unsqueeze(1).expand(-1, args.heads).contiguous().cuda())


def kernel_times(call, repeats: int) -> dict[str, float]:
    """Mean device time per call of each kernel that ``call`` launches, us."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            call()
        torch.cuda.synchronize()
    return {event.key: event.device_time_total / repeats for event in prof.key_averages()
            if event.device_time_total > 0}


def graph_time(call, repeats: int) -> float:
    """Mean time of ``call`` replayed from a CUDA graph, us (launch costs excluded)."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        call()  # compiles outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(repeats):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / repeats


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    keys, frames, state = pool_layer(args)
    in_use = torch.tensor(args.in_use, dtype=torch.int32, device="cuda")
    candidates = int((state[:args.in_use] == PATCH).sum())
    # per pass: the candidates' keys and frames, the states of the slots in use
    read = candidates * (64 * keys.element_size() + 4) + args.in_use * args.heads
    prefix = keys[:args.in_use], frames[:args.in_use], state[:args.in_use]
    kept = fused_diversity.candidate_totals(args.heads, keys.device)
    fused_diversity.sum_candidates(keys, frames, state, *kept, 0, in_use)
    calls = {"fixed shape (count on the device)":
             lambda: fused_diversity.diversity_ranking(keys, frames, state, num_keys=in_use),
             "eager (prefix in use)": lambda: fused_diversity.diversity_ranking(*prefix),
             "fixed shape, sums kept (the budgeted cache's)":
             lambda: fused_diversity.diversity_ranking(keys, frames, state, num_keys=in_use, totals=kept)}
    rows = []
    for name, call in calls.items():
        call()
        torch.cuda.synchronize()
        kernels = kernel_times(call, args.repeats)
        names = [name for name in ("_candidate_sums", "_diversity_ranking") if name in kernels]
        passes = sum(kernels[name] for name in names)
        rows.append({"call": name, "graph_us": graph_time(call, args.repeats), "kernels_us": kernels,
                     "passes_us": passes, "pass_read_mb": read / 1e6,
                     "pass_gb_s": len(names) * read / passes / 1e3 if passes else None})
        print(name, {key: round(value, 1) for key, value in kernels.items()}, flush=True)
    print_table(rows, [("call", "call", ""), ("passes over the keys (us)", "passes_us", ".1f"),
                       ("MB read per pass", "pass_read_mb", ".1f"), ("GB/s", "pass_gb_s", ".0f"),
                       ("whole call from a graph (us)", "graph_us", ".1f")])
    ranking, _ = fused_diversity.diversity_ranking(keys, frames, state, num_keys=in_use, totals=kept)
    selects = []
    for name, rows_ranked in (("per head (16 rows)", ranking), ("head-shared (1 row)", ranking[:1])):
        call = lambda rows_ranked=rows_ranked: fused_select.smallest(rows_ranked, args.patches)  # noqa: E731
        call()
        torch.cuda.synchronize()
        kernels = kernel_times(call, args.repeats)
        selects.append({"select": name, "graph_us": graph_time(call, args.repeats), "kernels_us": kernels})
        print(name, {key: round(value, 1) for key, value in kernels.items()}, flush=True)
    print_table(selects, [("select of a frame's patches", "select", ""),
                          ("whole call from a graph (us)", "graph_us", ".1f")])
    result = {"device": device_info(), "args": vars(args), "candidates": candidates, "rows": rows,
              "selects": selects}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
