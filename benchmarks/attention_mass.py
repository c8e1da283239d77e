"""Evict3r's attention mass of one steady-state budgeted layer (CUDA): the fused kernels alone.

Shape of the issue's settings: one 378x504 frame (6 specials + 972 patches), a pool of
``--capacity`` slots with ``--in-use`` keys in use, 16 heads x 64, bf16. The log-sum-exp is
given (the attention's own in the cache step, ``pool_attention.py``), so what is timed is the
pass that the step adds to its attention: ``accumulate_mass`` (mass, the pool's mass and
exposure, head 0's ranking, the statistic: what a fixed-shape STORE step runs) and
``attention_mass`` (the mass alone), for the sampled and the exact queries. Median of CUDA
events, rotating among input sets larger than the L2; the bandwidth is that of one read of the
keys in use.

    python benchmarks/attention_mass.py --json out.json
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import device_info, median_ms, print_table, write_json  # noqa: E402

from gct_stream_ros.cache.policies import fused_mass  # noqa: E402
from gct_stream_ros.cache.policies.attention_mass import MASS_QUERIES, stand_in_rows  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=978)
    p.add_argument("--specials", type=int, default=6)
    p.add_argument("--capacity", type=int, default=108_000, help="slots of the layer's pool")
    p.add_argument("--in-use", type=int, default=71_000, help="keys in use (attended and scored)")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", default="")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    print(device_info(), flush=True)
    h, d, capacity = args.heads, args.head_dim, args.capacity
    sets = 3  # 3 x 108k x 16 x 64 x 2 B = 660 MB of keys, far over the 60 MB L2
    keys = [torch.randn(capacity, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(sets)]
    q = torch.randn(args.queries, h, d, device="cuda", dtype=torch.bfloat16)
    lse = torch.full((h, args.queries), 12.0, device="cuda")  # any finite value: the work is the same
    count = torch.tensor(args.in_use, dtype=torch.int32, device="cuda")
    mass = torch.zeros(capacity, h, device="cuda")
    exposure = torch.zeros_like(mass)
    state = torch.zeros(capacity, h, dtype=torch.uint8, device="cuda")
    statistic = torch.zeros(1, device="cuda")
    key_bytes = args.in_use * h * d * 2
    rows_out = []
    for mode in MASS_QUERIES:
        rows, weights = stand_in_rows(args.queries, args.specials, mode, q.device)
        runs = {
            "accumulate_mass (fixed-shape step)": lambda i, rows=rows, weights=weights:
                fused_mass.accumulate_mass(q, weights, lse, keys[i], count, rows, mass, exposure, statistic,
                                             state),
            "attention_mass": lambda i, rows=rows, weights=weights:
                fused_mass.attention_mass(q, weights, lse, keys[i], count, rows),
        }
        for name, run in runs.items():
            us = 1000.0 * median_ms(run, args.repeats, sets)
            rows_out.append({"queries": mode, "kernel": name, "scored": rows.shape[0], "us": us,
                             "gb_s": key_bytes / us / 1e3})
    print_table(rows_out, [("queries", "queries", ""), ("kernels", "kernel", ""),
                           ("scored queries", "scored", ""), ("us / layer", "us", ".1f"),
                           ("keys read (GB/s)", "gb_s", ".0f")])
    write_json(args.json, {"device": device_info(), "args": vars(args), "rows": rows_out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
