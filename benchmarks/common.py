"""Helpers shared by the benchmarks: command lines, weights, inputs, CUDA timing, memory, tables, JSON.

Nothing here contains reference code: the reference (Robbyant/lingbot-map) and the shared
deterministic filler (``shared/parity/weights.py``) are imported at run time from paths given
on the command line, so the repository never carries them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

MIB = 1024 * 1024


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """A script's parser: its docstring as the help (command lines kept as written) and ``--json``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="", help="also write the results to this file")
    return parser


def add_model_arguments(parser: argparse.ArgumentParser, seed: int = 0, dtype: bool = True) -> None:
    """Our model on the shared deterministic weights (``ours_driver.build_ours``), fed frames of a given
    size; ``dtype``: with ``--dtype`` (a script that fixes its precisions has none)."""
    parser.add_argument("--weights-py", required=True, help="shared/parity/weights.py")
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--preset", default="lingbot-map", help="'tiny' for a CPU smoke test")
    parser.add_argument("--scale-frames", type=int, default=8)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--camera-iterations", type=int, default=4)
    parser.add_argument("--height", type=int, default=378)
    parser.add_argument("--width", type=int, default=504)
    parser.add_argument("--device", default="cuda")
    if dtype:
        parser.add_argument("--dtype", default="bfloat16")


def load_module(path: str, name: str) -> ModuleType:
    """Import a single-file module (e.g. ``shared/parity/weights.py``) from ``path``."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def fill_weights(model: torch.nn.Module, weights_py: str, seed: int, threads: int = 0) -> int:
    """Give ``model`` the shared deterministic weights; return the number of filled entries.

    Same values as ``weights.fill_deterministic(model, seed)`` (each entry comes from the same
    ``deterministic_tensor(seed, key, shape)``), but the float64 sampling of the 1.2 B
    parameters runs on a thread pool: torch releases the GIL in ``randn``, so 16 cores fill
    the ViT-L model in seconds instead of ~30 s.
    """
    weights = load_module(weights_py, "gct_bench_weights")
    entries = [(k, t) for k, t in model.state_dict(keep_vars=True).items()
               if torch.is_tensor(t) and t.is_floating_point()]

    def one(item: tuple[str, torch.Tensor]) -> None:
        key, tensor = item
        value = weights.deterministic_tensor(seed, key, tensor.shape)
        tensor.data.copy_(value.to(dtype=tensor.dtype).to(tensor.device))

    workers = threads or min(32, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, entries))
    return len(entries)


def same_token_window(budget: float, scale_frames: int, window: int) -> int:
    """The sliding window (frames) that holds ``budget`` of the full window's patch tokens: the
    plain cache a budgeted policy at ``budget`` competes with."""
    return round(budget * (scale_frames + window)) - scale_frames


def synthetic_frames(num: int, height: int, width: int, seed: int = 42,
                     device: str = "cpu") -> torch.Tensor:
    """``[num, 3, H, W]`` RGB in [0, 1]; random values (never zeros: they can time faster)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(num, 3, height, width, generator=gen).to(device)


def smooth_frames(num: int, height: int, width: int, seed: int = 7) -> torch.Tensor:
    """``[num, 3, H, W]`` in (0.05, 0.95): a sum of oriented sinusoids seen by a panning camera.

    Smooth, structured images exercise the attention far more like real video than noise does,
    and consecutive frames overlap (as in a stream).
    """
    gen = torch.Generator().manual_seed(seed)
    k = 6
    amp = 0.3 + 0.7 * torch.rand(k, generator=gen, dtype=torch.float64)
    freq = 0.02 + 0.1 * torch.rand(k, generator=gen, dtype=torch.float64)
    theta = math.pi * torch.rand(k, generator=gen, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(k, 3, generator=gen, dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                            torch.arange(width, dtype=torch.float64), indexing="ij")
    out = torch.empty(num, 3, height, width)
    for t in range(num):
        u, v = xx + 2.0 * t, yy + 0.75 * t
        c, s_ = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        proj = (c * u + s_ * v) * freq[:, None, None]
        tex = (amp[:, None, None, None] * torch.sin(proj[:, None] + phase[:, :, None, None])).sum(0)
        out[t] = (0.5 + 0.45 * torch.tanh(0.6 * tex)).float()
    return out


@dataclass
class RunTimes:
    """Per-frame GPU times of one streaming run (phase 1 separate) and its memory readings."""

    label: str
    phase1_ms: float = 0.0
    scale_frames: int = 0
    frame_ms: list[float] = field(default_factory=list)
    host_ms: list[float] = field(default_factory=list)
    memory_mib: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Global and windowed figures, the same definitions as the reference's profiler."""
        n = len(self.frame_ms)
        out: dict[str, Any] = {"label": self.label, "streaming_frames": n,
                               "scale_frames": self.scale_frames, "phase1_ms": self.phase1_ms}
        if n == 0:
            return out | {"memory_mib": self.memory_mib, **self.extra}

        def window(pos: int, half: int = 30) -> float:
            return statistics.fmean(self.frame_ms[max(0, pos - half):min(n, pos + half + 1)])

        total = self.phase1_ms + sum(self.frame_ms)
        frames = self.scale_frames + n
        # The first streaming frame after a reset pays one-time work (graph capture, plan
        # buffers); the median and the windows exclude nothing else.
        stream = self.frame_ms[1:] if n > 1 else self.frame_ms
        out |= {
            "global_ms_per_frame": total / frames,
            "global_fps": 1000.0 * frames / total,
            "stream_mean_ms": statistics.fmean(stream),
            "stream_median_ms": statistics.median(stream),
            "stream_p90_ms": sorted(stream)[int(0.9 * (len(stream) - 1))],
            "stream_fps": 1000.0 / statistics.fmean(stream),
            "ms_at_10pct": window(max(10, n // 10)),
            "ms_at_50pct": window(n // 2),
            "ms_at_90pct": window(n - max(1, n // 10)),
            "host_mean_ms": statistics.fmean(self.host_ms[1:] or self.host_ms) if self.host_ms else None,
            "memory_mib": self.memory_mib,
        }
        return out | self.extra


class FrameTimer:
    """One CUDA event pair per frame and a sync after each, as the reference profiler does.

    The sync after every frame keeps the frames independent (the GPU is idle at each start), so
    the event time includes any CPU launch gaps inside the step: that is what a node feeding
    frames one by one sees.
    """

    def __init__(self) -> None:
        self.start = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)
        self._t0 = 0.0

    def __enter__(self) -> FrameTimer:
        torch.cuda.synchronize()
        self._t0 = time.perf_counter()
        self.start.record()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end.record()
        torch.cuda.synchronize()
        self.host_ms = 1000.0 * (time.perf_counter() - self._t0)
        self.gpu_ms = self.start.elapsed_time(self.end)


def memory_snapshot() -> dict[str, float]:
    """Allocated / reserved / peak memory of the caching allocator, MiB."""
    return {
        "allocated": torch.cuda.memory_allocated() / MIB,
        "reserved": torch.cuda.memory_reserved() / MIB,
        "peak_allocated": torch.cuda.max_memory_allocated() / MIB,
    }


def median_ms(fn: Callable[[int], Any], repeats: int, sets: int) -> float:
    """Median CUDA-event time (ms) of ``fn(i)``, ``i`` rotating over ``sets`` input sets, after 3 warm-ups."""
    for i in range(3):
        fn(i % sets)
    torch.cuda.synchronize()
    times = []
    for i in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(i % sets)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "sm": f"{props.major}.{props.minor}",
                 "gpu_mem_gib": round(props.total_memory / 2**30, 1),
                 "multiprocessors": props.multi_processor_count,
                 "cuda": torch.version.cuda}
    try:
        import flashinfer  # noqa: PLC0415 - optional, only for the record

        info["flashinfer"] = getattr(flashinfer, "__version__", "?")
    except Exception as exc:  # pragma: no cover - depends on the machine
        info["flashinfer"] = f"unavailable ({type(exc).__name__}: {exc})"
    return info


def print_table(rows: Iterable[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """Render ``rows`` as a Markdown table; ``columns`` are (header, key, format)."""
    rows = list(rows)
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for _, key, fmt in columns:
            value = row
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            cells.append("-" if value is None else (format(value, fmt) if fmt else str(value)))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(path: str | None, payload: Any) -> None:
    """``payload`` as JSON at ``path`` (its folder made); nothing when ``path`` is empty (no ``--json``)."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2, default=str))
    print(f"wrote {path}", flush=True)
