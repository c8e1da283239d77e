"""Build, warm, compile and time OUR model (``gct_stream_ros.model``) for the GPU benchmarks.

Everything that depends on how the model package spells its API lives here, so the benchmark
scripts stay unchanged when the model evolves.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from common import FrameTimer, RunTimes, fill_weights, memory_snapshot

from gct_stream_ros.cache.base import StepMode

# our cache backends (the factory's names): contiguous (SDPA/cuDNN in place), dense SDPA, paged + gather
# + SDPA, FlashInfer FA2 / FA3
BACKENDS = ("contiguous", "dense", "paged_gather", "flashinfer", "flashinfer_fa3", "auto")
COMPILE_LEVELS = ("none", "compiled", "graphs", "compiled+graphs")
"""``compiled``: the model's own ``compile_regions`` (``model.compile: true``); ``graphs``: its steps
replayed from CUDA graphs (``replay_steps``, ``model.cuda_graphs: true``); the node on CUDA with
both on runs ``compiled+graphs``. A level may end in ``FP16_DEPTH_HEAD`` (``model.half_depth_head``),
then in ``FP16_CAMERA_HEAD`` (``model.half_camera_head``): ``split_level``."""
FP16_DEPTH_HEAD = "+fp16head"
FP16_CAMERA_HEAD = "+fp16camera"


def split_level(level: str) -> tuple[str, bool, bool]:
    """``(compile level, half_depth_head, half_camera_head)`` of a level with its optional suffixes."""
    half_camera_head = level.endswith(FP16_CAMERA_HEAD)
    level = level.removesuffix(FP16_CAMERA_HEAD)
    half_depth_head = level.endswith(FP16_DEPTH_HEAD)
    return level.removesuffix(FP16_DEPTH_HEAD), half_depth_head, half_camera_head


def build_cache(backend: str, policy: str, config: Any, dtype: torch.dtype, device: str = "cuda",
                budget: float | None = None, evict_every: int | None = None) -> Any:
    """The aggregator cache through the cache factory (``policy`` other than the window: backend auto;
    ``budget`` and ``evict_every``: its ``cache.budget`` and ``cache.evict_every``, None for the defaults)."""
    from gct_stream_ros.cache.factory import CacheSettings, build_cache  # noqa: PLC0415

    c = config
    chosen = {"budget": budget, "evict_every": evict_every}
    settings = CacheSettings(policy=policy, scale_frames=c.scale_frames, sliding_window=c.sliding_window,
                             max_frames=c.max_frames, num_special_tokens=c.num_special_tokens,
                             **{name: value for name, value in chosen.items() if value is not None})
    return build_cache(settings, c.depth, c.num_heads, c.head_dim, device=device, dtype=dtype,
                       backend=backend if policy == "sliding_window" else "auto")


def build_ours(weights_py: str, seed: int, *, backend: str, policy: str, scale_frames: int,
               window: int, camera_iterations: int, dtype: torch.dtype, max_frames: int = 0,
               cache_max_frames: int = 1024, preset: str = "lingbot-map", device: str = "cuda",
               budget: float | None = None, half_depth_head: bool = False,
               half_camera_head: bool = False) -> Any:
    """ViT-L ``lingbot-map`` preset with the shared deterministic weights, on CUDA, eval mode.

    Built on the meta device and materialised on the GPU (no 1.2 B-parameter CPU init), then
    ``to_inference_dtype`` (bf16: the reference demo's recipe: aggregator weights
    bf16 under autocast, heads fp32), then filled. ``max_frames`` is unused (our RoPE angles
    are computed, not tabled); ``cache_max_frames`` bounds the specials as the node does.
    """
    from gct_stream_ros.model.config import GCTConfig  # noqa: PLC0415 - heavy import
    from gct_stream_ros.model.gct import GCTModel  # noqa: PLC0415

    del max_frames
    config = GCTConfig.preset(preset, scale_frames=scale_frames, sliding_window=window,
                              camera_iterations=camera_iterations, max_frames=cache_max_frames)
    cache = build_cache(backend, policy, config, dtype, device, budget)
    with torch.device("meta"):
        model = GCTModel(config, cache)
    model.materialize(device)
    if dtype != torch.float32:
        model.to_inference_dtype(dtype, half_depth_head, half_camera_head)
    # fill after the cast: each value is rounded once from float64, as for the reference
    fill_weights(model, weights_py, seed)
    return model.eval()


def build_from_arguments(args: argparse.Namespace, policy: str, budget: float | None = None,
                         half_heads: bool = False) -> Any:
    """``build_ours`` from ``common.add_model_arguments``'s command line, with the ``auto`` backend (the one
    the budgeted policies run on), ``budget`` as ``cache.budget`` (None: the default) and, with
    ``half_heads``, both heads in half precision."""
    return build_ours(args.weights_py, args.seed, backend="auto", policy=policy,
                      scale_frames=args.scale_frames, window=args.window,
                      camera_iterations=args.camera_iterations, dtype=getattr(torch, args.dtype),
                      device=args.device, budget=budget, preset=args.preset, half_depth_head=half_heads,
                      half_camera_head=half_heads)


def step(model: Any, frames: torch.Tensor, scale_frames: int, mode: StepMode = StepMode.STORE) -> Any:
    """One step over ``frames [S,3,H,W]`` on the model's device (S > 1: phase 1)."""
    with torch.no_grad():
        return model.step(frames, mode=mode, num_scale_frames=scale_frames)


def warm(model: Any, frames: torch.Tensor, scale_frames: int, passes: int, stream_frames: int = 10) -> None:
    """Reset -> phase 1 -> ``stream_frames`` streaming steps, ``passes`` times."""
    for _ in range(passes):
        model.reset()
        step(model, frames[:scale_frames].to(_device(model)), scale_frames)
        for i in range(scale_frames, scale_frames + stream_frames):
            step(model, frames[i:i + 1].to(_device(model)), scale_frames)
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def add_streamer_arguments(parser: argparse.ArgumentParser) -> None:
    """How ``Streamer`` runs the model: the node's ``model.*`` settings that change the step's kernels."""
    parser.add_argument("--compile", action="store_true", help="model.compile: true (compile_regions)")
    parser.add_argument("--graphs", action="store_true",
                        help="model.cuda_graphs: true (steps replayed from CUDA graphs, as the node on CUDA)")
    parser.add_argument("--half-heads", action="store_true",
                        help="model.half_depth_head and model.half_camera_head: true (the node's defaults on "
                             "CUDA; without it the heads run in fp32, as the reference's demo)")
    parser.add_argument("--evict-every", type=int, default=None,
                        help="cache.evict_every of the budgeted policies (default: the node's)")


class Streamer:
    """One model for the whole process (built from the shared model arguments, ``add_streamer_arguments``,
    and compiled at the first run), a new cache per run: what ``policy_fidelity.py``, ``long_stream.py``
    and ``step_kernels.py`` stream through."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.model: Any = None
        levels = (("compiled", args.compile), ("graphs", args.graphs))
        self.level = "+".join(name for name, on in levels if on)

    def stream(self, policy: str, budget: float | None, frames: torch.Tensor, order: Iterable[int],
               window: int | None = None, keep: Callable[[Any], None] | None = None) -> list[float]:
        """ms of each single-frame step of ``frames[order]`` after the scale frames' step (the first
        ``scale_frames`` of ``frames``), with ``policy``'s cache (``window``: the sliding window's frames);
        ``keep`` is handed every output, the scale frames' first."""
        args = self.args
        if self.model is None:
            self.model = build_from_arguments(args, "sliding_window", half_heads=args.half_heads)
            if self.level:
                apply_compile(self.model, self.level)
        model = self.model
        config = model.config if window is None else dataclasses.replace(model.config, sliding_window=window)
        evict_every = None if policy == "sliding_window" else args.evict_every
        model.use_cache(build_cache("auto", policy, config, getattr(torch, args.dtype), args.device, budget,
                                    evict_every))
        if self.level:
            warm(model, frames, args.scale_frames, passes=1)
        model.reset()
        output = step(model, frames[:args.scale_frames], args.scale_frames)
        if keep is not None:
            keep(output)
        milliseconds = []
        for index in order:
            start = time.perf_counter()
            output = step(model, frames[index:index + 1], args.scale_frames)
            if frames.is_cuda:
                torch.cuda.synchronize()
            milliseconds.append(1000.0 * (time.perf_counter() - start))
            if keep is not None:
                keep(output)
        return milliseconds


def _device(model: Any) -> torch.device:
    return model.camera_head.embed_pose.weight.device


def profile(model: Any, frames: torch.Tensor, scale_frames: int, label: str,
            keyframe_interval: int = 1) -> RunTimes:
    """Phase 1 then one frame at a time, one CUDA event pair and a sync per frame."""
    run = RunTimes(label=label, scale_frames=scale_frames)
    model.reset()
    torch.cuda.reset_peak_memory_stats()
    batch = frames[:scale_frames].cuda()
    with FrameTimer() as t:
        step(model, batch, scale_frames)
    run.phase1_ms = t.gpu_ms
    total = frames.shape[0]
    for i in range(scale_frames, total):
        keyframe = keyframe_interval <= 1 or (i - scale_frames) % keyframe_interval == 0
        frame = frames[i:i + 1].cuda()
        with FrameTimer() as t:
            step(model, frame, scale_frames, StepMode.STORE if keyframe else StepMode.SKIP)
        run.frame_ms.append(t.gpu_ms)
        run.host_ms.append(t.host_ms)
        if i == scale_frames + (total - scale_frames) // 2:
            run.memory_mib["allocated_mid"] = torch.cuda.memory_allocated() / 2**20
    run.memory_mib |= memory_snapshot()
    return run


def cache_stats(model: Any) -> dict[str, Any]:
    stats = model.cache_stats()
    return {"frames_stored": stats.frames_stored, "tokens_max": stats.tokens_max,
            "bytes_allocated": stats.bytes_allocated, "policy": stats.policy}


def apply_compile(model: Any, level: str) -> dict[str, Any]:
    """Compile the model and/or replay its steps from CUDA graphs as the engine does."""
    level = split_level(level)[0]
    if level not in COMPILE_LEVELS:
        raise ValueError(f"compile level {level!r} not in {COMPILE_LEVELS}")
    if "compiled" in level:
        model.compile_regions()
    if "graphs" in level:
        model.replay_steps()
    return {"level": level}


def kernel_profile(model: Any, frames: torch.Tensor, scale_frames: int, count: int) -> dict[str, Any]:
    """Top CUDA kernels of ``count`` more streaming frames, continuing the timed run (steady state:
    the window is full), and the GPU busy time per frame (sum of kernel times)."""
    from torch.autograd import DeviceType  # noqa: PLC0415
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    total = frames.shape[0]
    inputs = [frames[scale_frames + i % (total - scale_frames)][None].cuda() for i in range(count)]
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for frame in inputs:
            step(model, frame, scale_frames)
        torch.cuda.synchronize()
    averages = prof.key_averages()
    # kernels only: the CPU-side ops also carry the device time of the kernels they launch
    busy_us = sum(e.self_device_time_total for e in averages if e.device_type == DeviceType.CUDA)
    tables = {}
    with contextlib.suppress(Exception):
        tables["table"] = averages.table(sort_by="self_cuda_time_total", row_limit=40,
                                         max_name_column_width=70)
        tables["host_table"] = averages.table(sort_by="self_cpu_time_total", row_limit=20,
                                              max_name_column_width=70)
    return {"gpu_busy_ms_per_frame": busy_us / 1000.0 / count,
            "cpu_ms_per_frame": averages.self_cpu_time_total / 1000.0 / count,
            "table": tables.get("table", ""), "host_table": tables.get("host_table", "")}
