"""One steady-state global-attention layer, kernel by kernel (CUDA): which attention to build on.

Shape of the issue's settings: 978 query tokens (one 378x504 frame), the keys of 8 scale + 64
window frames (972 patches each) and the specials of every stored frame (6 each), 16 heads x 64,
bf16. For every candidate it reports the median time (CUDA events, rotating among input sets),
the TFLOP/s, the error against an fp32 reference, and, for the cuDNN backend, what a key
count seen for the first time costs (its execution plan is built per shape).

    python benchmarks/attention_layer.py --frames 320 --json out.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import device_info, median_ms, write_json  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=978)
    p.add_argument("--patches", type=int, default=972)
    p.add_argument("--specials", type=int, default=6)
    p.add_argument("--kept-frames", type=int, default=72, help="scale + window frames whose patches are kept")
    p.add_argument("--frames", type=int, default=320, help="stored frames (each keeps its specials)")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--new-shapes", type=int, default=4, help="first calls timed at new key counts")
    p.add_argument("--json", default="")
    return p.parse_args(argv)


def heads_first(x: torch.Tensor) -> torch.Tensor:
    """``[N, H, D]`` -> ``[1, H, N, D]`` (a view)."""
    return x.unsqueeze(0).transpose(1, 2)


def merge(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor) -> torch.Tensor:
    """Two partial softmax attentions ``[1, H, Q, D]`` with their log-sum-exps ``[1, H, Q]``."""
    lse_a, lse_b = (x.reshape(*out_a.shape[:-1], 1).float() for x in (lse_a, lse_b))
    lse = torch.logaddexp(lse_a, lse_b)
    return (out_a * (lse_a - lse).exp() + out_b * (lse_b - lse).exp()).to(out_a.dtype)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    info = device_info()
    print(info, flush=True)
    patch_keys = args.kept_frames * args.patches
    special_keys = args.frames * args.specials
    keys = patch_keys + special_keys
    flop = 4 * args.queries * keys * args.heads * args.head_dim
    sets = 4  # rotate input sets: 4 x 2 x 72k x 1024 x 2 B = 1.2 GB, far over the 60 MB L2
    h, d = args.heads, args.head_dim
    stores = [torch.randn(2, keys + args.specials * 64, h, d, device="cuda", dtype=torch.bfloat16)
              for _ in range(sets)]
    queries = [torch.randn(args.queries, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(sets)]
    scale = d ** -0.5

    def q_(i: int) -> torch.Tensor:
        return heads_first(queries[i])

    def kv(i: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return heads_first(stores[i][0, start:stop]), heads_first(stores[i][1, start:stop])

    def sdpa(backend: SDPBackend, n: int = keys) -> Callable[[int], torch.Tensor]:
        def run(i: int) -> torch.Tensor:
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q_(i), *kv(i, 0, n), scale=scale)
        return run

    def merged(i: int) -> torch.Tensor:
        # patches through cuDNN (fixed key count once the window is full), specials through flash
        out_a, lse_a = torch.ops.aten._scaled_dot_product_cudnn_attention(
            q_(i), *kv(i, 0, patch_keys), None, True, scale=scale)[:2]
        out_b, lse_b = torch.ops.aten._scaled_dot_product_flash_attention(
            q_(i), *kv(i, patch_keys, keys), scale=scale)[:2]
        return merge(out_a, lse_a, out_b, lse_b)

    reference = F.scaled_dot_product_attention(q_(0).float(), *(x.float() for x in kv(0, 0, keys)),
                                               scale=scale)
    rows: list[dict[str, Any]] = []
    candidates = {"sdpa cudnn": sdpa(SDPBackend.CUDNN_ATTENTION),
                  "sdpa flash": sdpa(SDPBackend.FLASH_ATTENTION),
                  "sdpa efficient": sdpa(SDPBackend.EFFICIENT_ATTENTION),
                  "cudnn patches + flash specials, merged": merged}
    for name, fn in candidates.items():
        try:
            out = fn(0)
            error = ((out.float() - reference).norm() / reference.norm()).item()
            ms = median_ms(fn, args.repeats, sets)
            rows.append({"kernel": name, "ms": ms, "tflops": flop / ms / 1e9, "rel_error": error,
                         "x24_ms": 24 * ms})
        except Exception as exc:  # a backend may refuse the shape: record it, go on
            rows.append({"kernel": name, "error": repr(exc)[:300]})
        print(rows[-1], flush=True)

    # what a key count seen for the first time costs through cuDNN (the plan is built per shape)
    first_calls = []
    for extra in range(1, args.new_shapes + 1):
        n = keys + extra * args.specials
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        sdpa(SDPBackend.CUDNN_ATTENTION, n)(0)
        torch.cuda.synchronize()
        first = 1000 * (time.perf_counter() - t0)
        t0 = time.perf_counter()
        sdpa(SDPBackend.CUDNN_ATTENTION, n)(0)
        torch.cuda.synchronize()
        second = 1000 * (time.perf_counter() - t0)
        first_calls.append({"keys": n, "first_call_ms": first, "second_call_ms": second})
        print(first_calls[-1], flush=True)

    # CUDA-graph capture of the cuDNN call (fixed shape)
    graph_row: dict[str, Any] = {}
    try:
        static = sdpa(SDPBackend.CUDNN_ATTENTION)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            static(0)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = static(0)
        graph.replay()
        torch.cuda.synchronize()
        graph_row = {"captured": True, "equal": bool(torch.equal(captured, static(0))),
                     "replay_ms": median_ms(lambda i: graph.replay(), args.repeats, 1)}
    except Exception as exc:
        graph_row = {"captured": False, "error": repr(exc)[:300]}
    print(graph_row, flush=True)
    write_json(args.json, {"device": info, "args": vars(args), "keys": keys, "gflop": flop / 1e9,
                           "kernels": rows, "cudnn_first_calls": first_calls, "cuda_graph": graph_row})
    print(f"\n{keys} keys ({patch_keys} patches + {special_keys} specials), {args.queries} queries, "
          f"{h}x{d}, {flop / 1e9:.0f} GFLOP")
    for r in rows:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
