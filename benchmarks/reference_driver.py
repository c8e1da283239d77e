"""Drive the reference model (Robbyant/lingbot-map ``GCTStream``) from a path given at run time.

Only its public API is used (constructor, ``forward``, ``clean_kv_cache``, ``_set_skip_append``,
the module attributes that its own profiler compiles); no reference code lives in this
repository. The settings follow the reference's ``gct_profile.py`` so that our numbers and its
numbers come from the same machine, process and inputs.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import torch
from common import FrameTimer, RunTimes, memory_snapshot


def import_reference(path: str) -> Any:
    """Import ``lingbot_map.models.gct_stream`` from ``path`` (a folder holding lingbot_map/)."""
    root = Path(path).resolve()
    if not (root / "lingbot_map").is_dir():
        raise SystemExit(f"--reference must be a directory containing lingbot_map/: {path}")
    sys.path.insert(0, str(root))
    import lingbot_map.models.gct_stream as gct_stream  # noqa: PLC0415 - path known at run time

    return gct_stream


def build_reference(path: str, backend: str, max_frame_num: int, window: int, scale_frames: int,
                    camera_iterations: int, cast_dtype: torch.dtype | None = None,
                    img_size: int = 518) -> torch.nn.Module:
    """``GCTStream`` with the profiler's constructor arguments, on CUDA, eval mode.

    ``cast_dtype``: cast the aggregator as the demo does (weights and buffers bf16); the
    profiler itself keeps fp32 weights and relies on autocast.
    """
    gct_stream = import_reference(path)
    with contextlib.redirect_stdout(sys.stderr):
        model = gct_stream.GCTStream(
            img_size=img_size, patch_size=14, enable_3d_rope=True, max_frame_num=max_frame_num,
            kv_cache_sliding_window=window, kv_cache_scale_frames=scale_frames,
            use_sdpa=(backend == "sdpa"), camera_num_iterations=camera_iterations)
    model = model.eval().cuda()
    if cast_dtype is not None:
        model.aggregator = model.aggregator.to(dtype=cast_dtype)
    return model


def compile_reference(model: torch.nn.Module) -> None:
    """The compile targets of the reference's profiling script, reduce-overhead (CUDA graphs)."""
    agg = model.aggregator
    for i, block in enumerate(agg.frame_blocks):
        agg.frame_blocks[i] = torch.compile(block, mode="reduce-overhead")
    for i, block in enumerate(agg.patch_embed.blocks):
        agg.patch_embed.blocks[i] = torch.compile(block, mode="reduce-overhead")
    for block in agg.global_blocks:
        if hasattr(block, "attn_pre"):
            block.attn_pre = torch.compile(block.attn_pre, mode="reduce-overhead")
        if hasattr(block, "ffn_residual"):
            block.ffn_residual = torch.compile(block.ffn_residual, mode="reduce-overhead")
        block.attn.proj = torch.compile(block.attn.proj, mode="reduce-overhead")
    model.point_head = None


def reference_step(model: torch.nn.Module, frames: torch.Tensor, scale_frames: int,
                   dtype: torch.dtype, keyframe: bool = True) -> dict[str, torch.Tensor]:
    """One reference forward over ``frames [S,3,H,W]`` (S > 1: phase 1), as its loops call it."""
    images = frames.unsqueeze(0).to(dtype)
    if not keyframe:
        model._set_skip_append(True)
    torch.compiler.cudagraph_mark_step_begin()
    autocast = (contextlib.nullcontext() if dtype == torch.float32
                else torch.autocast("cuda", dtype=dtype))
    with torch.no_grad(), autocast:
        out = model.forward(images, num_frame_for_scale=scale_frames,
                            num_frame_per_block=frames.shape[0], causal_inference=True)
    if not keyframe:
        model._set_skip_append(False)
    return out


def warm_reference(model: torch.nn.Module, frames: torch.Tensor, scale_frames: int,
                   dtype: torch.dtype, passes: int, stream_frames: int = 10) -> None:
    """Full reset -> phase 1 -> streaming passes, so graphs, JIT and allocator settle."""
    for _ in range(passes):
        model.clean_kv_cache()
        reference_step(model, frames[:scale_frames], scale_frames, dtype)
        for i in range(stream_frames):
            reference_step(model, frames[scale_frames + i:scale_frames + i + 1], scale_frames, dtype)
    torch.cuda.synchronize()


def profile_reference(model: torch.nn.Module, frames: torch.Tensor, scale_frames: int,
                      dtype: torch.dtype, label: str) -> RunTimes:
    """Phase 1 then one frame at a time; one event pair and a sync per frame."""
    run = RunTimes(label=label, scale_frames=scale_frames)
    model.clean_kv_cache()
    torch.cuda.reset_peak_memory_stats()
    batch = frames[:scale_frames].cuda()
    with FrameTimer() as t:
        reference_step(model, batch, scale_frames, dtype)
    run.phase1_ms = t.gpu_ms
    for i in range(scale_frames, frames.shape[0]):
        frame = frames[i:i + 1].cuda()
        with FrameTimer() as t:
            reference_step(model, frame, scale_frames, dtype)
        run.frame_ms.append(t.gpu_ms)
        run.host_ms.append(t.host_ms)
        if i == scale_frames + (frames.shape[0] - scale_frames) // 2:
            run.memory_mib["allocated_mid"] = torch.cuda.memory_allocated() / 2**20
    run.memory_mib |= memory_snapshot()
    return run
