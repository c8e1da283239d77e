"""GPU parity and memory checks of our model (the GPU parts of the model and cache issues).

Three parts, each optional (``--parts``):

* ``model``: ours (``--model-backend``, the dense SDPA cache by default) vs the reference
  (``use_sdpa=True``), both bf16 as the reference demo runs them (aggregator cast to bf16,
  autocast bf16, heads fp32), the same ``fill_deterministic`` weights, keyframe interval 1
  (the reference's SDPA path would store non-keyframes), ``--model-frames`` streaming frames
  after the scale frames. Per-frame max and mean abs error of pose_enc, depth, depth_conf.
  With ``--fp32-floor`` the reference also runs in fp32, which gives the bf16 noise floor to
  judge the errors by.
* ``cache``: ours with each of ``--cache-backends`` (FlashInfer paged, contiguous) vs ours with
  the dense SDPA cache, and the first of them vs the others, bf16, ``--cache-frames`` frames in
  all; max errors.
* ``memory``: for each policy, GPU memory allocated after frame ``--memory-frames`` (first and
  last value); growth between them (< 2 % expected: the caches are bounded).

    python benchmarks/gpu_parity.py --weights-py shared/parity/weights.py --reference .ref \
        --json out/parity.json
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ours_driver  # noqa: E402 - the script's folder is put on the path first
from common import (  # noqa: E402
    MIB,
    add_model_arguments,
    benchmark_parser,
    device_info,
    fill_weights,
    print_table,
    smooth_frames,
    write_json,
)

from gct_stream_ros.cache.base import StepMode  # noqa: E402

OUTPUTS = ("pose_enc", "depth", "depth_conf")


def run_ours(args: argparse.Namespace, frames: torch.Tensor, backend: str, dtype: torch.dtype,
             policy: str = "sliding_window", level: str = "none",
             half_heads: bool = False) -> list[dict[str, torch.Tensor]]:
    model = ours_driver.build_ours(args.weights_py, args.seed, backend=backend, policy=policy,
                                   scale_frames=args.scale_frames, window=args.window,
                                   camera_iterations=args.camera_iterations, dtype=dtype,
                                   max_frames=frames.shape[0] + 100, half_depth_head=half_heads,
                                   half_camera_head=half_heads)
    if level != "none":
        ours_driver.apply_compile(model, level)
    model.reset()
    outs = []
    s = args.scale_frames
    for start, stop in [(0, s)] + [(i, i + 1) for i in range(s, frames.shape[0])]:
        out = ours_driver.step(model, frames[start:stop].cuda(), s, StepMode.STORE)
        outs.extend(_split(out.pose_enc, out.depth, out.depth_conf))
    del model
    _free()
    return outs


def run_reference(args: argparse.Namespace, frames: torch.Tensor,
                  dtype: torch.dtype) -> list[dict[str, torch.Tensor]]:
    import reference_driver as ref  # noqa: PLC0415

    # Demo numerics: aggregator cast to the inference dtype, then filled (direct rounding of the
    # float64 values, the same as ours), autocast around the forward, heads fp32.
    model = ref.build_reference(args.reference, "sdpa", max_frame_num=frames.shape[0] + 100,
                                window=args.window, scale_frames=args.scale_frames,
                                camera_iterations=args.camera_iterations,
                                cast_dtype=None if dtype == torch.float32 else dtype)
    fill_weights(model, args.weights_py, args.seed)
    model.clean_kv_cache()
    outs = []
    s = args.scale_frames
    for start, stop in [(0, s)] + [(i, i + 1) for i in range(s, frames.shape[0])]:
        out = ref.reference_step(model, frames[start:stop].cuda(), s, dtype)
        outs.extend(_split(out["pose_enc"][0], out["depth"][0, ..., 0], out["depth_conf"][0]))
    del model
    _free()
    return outs


def _split(pose: torch.Tensor, depth: torch.Tensor, conf: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Per-frame fp32 CPU copies of one step's outputs."""
    return [{"pose_enc": p.float().cpu(), "depth": d.float().cpu(), "depth_conf": c.float().cpu()}
            for p, d, c in zip(pose, depth, conf)]


def _cuda() -> bool:
    return torch.cuda.is_available()


def _sync() -> None:
    if _cuda():
        torch.cuda.synchronize()


def _allocated() -> float:
    """MiB allocated by the caching allocator (CPU runs: cache bytes are reported separately)."""
    return torch.cuda.memory_allocated() / MIB if _cuda() else 0.0


def _free() -> None:
    gc.collect()
    if _cuda():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def compare(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Per-frame max/mean abs error of every output, and their maxima over the run."""
    per_frame = []
    for i, (x, y) in enumerate(zip(a, b)):
        row: dict[str, Any] = {"frame": i}
        for name in OUTPUTS:
            diff = (x[name] - y[name]).abs()
            row[f"{name}_max"] = float(diff.max())
            row[f"{name}_mean"] = float(diff.mean())
            row[f"{name}_finite"] = bool(torch.isfinite(x[name]).all() and torch.isfinite(y[name]).all())
        per_frame.append(row)
    summary: dict[str, Any] = {"frames": len(per_frame)}
    for name in OUTPUTS:
        summary[f"{name}_max"] = max(r[f"{name}_max"] for r in per_frame)
        summary[f"{name}_mean"] = sum(r[f"{name}_mean"] for r in per_frame) / len(per_frame)
        summary[f"{name}_all_finite"] = all(r[f"{name}_finite"] for r in per_frame)
        summary[f"{name}_range"] = [min(float(x[name].min()) for x in b),
                                    max(float(x[name].max()) for x in b)]
    return {"summary": summary, "per_frame": per_frame}


def buckets(per_frame: list[dict[str, Any]], scale_frames: int) -> list[dict[str, Any]]:
    """Rows for the printed table: scale frames, then streaming frames in groups of 25."""
    groups = [(f"scale 0-{scale_frames - 1}", per_frame[:scale_frames])]
    rest = per_frame[scale_frames:]
    for start in range(0, len(rest), 25):
        chunk = rest[start:start + 25]
        groups.append((f"stream {chunk[0]['frame']}-{chunk[-1]['frame']}", chunk))
    rows = []
    for label, chunk in groups:
        if not chunk:
            continue
        row: dict[str, Any] = {"frames": label}
        for name in OUTPUTS:
            row[f"{name}_max"] = max(r[f"{name}_max"] for r in chunk)
            row[f"{name}_mean"] = sum(r[f"{name}_mean"] for r in chunk) / len(chunk)
        rows.append(row)
    return rows


ERR_COLUMNS = [("frames", "frames", "")] + [
    (f"{n} {s}", f"{n}_{s}", ".2e") for n in OUTPUTS for s in ("max", "mean")]


def part_model(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    frames = smooth_frames(args.scale_frames + args.model_frames, args.height, args.width)
    t0 = time.perf_counter()
    ours = run_ours(args, frames, args.model_backend, torch.bfloat16, level=args.model_level)
    half_heads = run_ours(args, frames, args.model_backend, torch.bfloat16, level=args.model_level,
                          half_heads=True) if args.half_heads else None
    ref_bf16 = run_reference(args, frames, torch.bfloat16)
    result = {"ours_bf16_vs_reference_bf16": compare(ours, ref_bf16)}
    if half_heads is not None:
        result["ours_half_heads_vs_reference_bf16"] = compare(half_heads, ref_bf16)
        result["ours_half_heads_vs_ours"] = compare(half_heads, ours)
    if args.fp32_floor:
        ref_fp32 = run_reference(args, frames, torch.float32)
        result["reference_bf16_vs_reference_fp32"] = compare(ref_bf16, ref_fp32)
        result["ours_bf16_vs_reference_fp32"] = compare(ours, ref_fp32)
        if half_heads is not None:
            result["ours_half_heads_vs_reference_fp32"] = compare(half_heads, ref_fp32)
    result["seconds"] = time.perf_counter() - t0
    payload["model"] = result
    for name, cmp in result.items():
        if isinstance(cmp, dict) and "per_frame" in cmp:
            print(f"\n## {name} (bf16, ours {args.model_backend}, keyframe interval 1)")
            print_table(buckets(cmp["per_frame"], args.scale_frames), ERR_COLUMNS)


def part_cache(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """Each of ``--cache-backends`` against the dense SDPA cache, then the first against the others."""
    frames = smooth_frames(args.cache_frames, args.height, args.width, seed=11)
    t0 = time.perf_counter()
    backends = args.cache_backends.split(",")
    outputs = {backend: run_ours(args, frames, backend, torch.bfloat16) for backend in ["dense", *backends]}
    pairs = [(b, "dense") for b in backends] + [(backends[0], b) for b in backends[1:]]
    result: dict[str, Any] = {}
    for first, second in pairs:
        cmp = compare(outputs[first], outputs[second])
        result[f"{first}_vs_{second}"] = cmp
        print(f"\n## ours {first} vs ours {second} (bf16)")
        print_table(buckets(cmp["per_frame"], args.scale_frames)[::2], ERR_COLUMNS)
    result["seconds"] = time.perf_counter() - t0
    payload["cache"] = result


@torch.no_grad()
def _drive_caches(model: Any, n: int, keys: list[torch.Tensor], features: torch.Tensor, s: int) -> None:
    """One step of the aggregator cache and the camera head at the real sizes, no backbone.

    Memory growth lives in the caches: the aggregator's (one ``attend`` per global layer with
    q/k/v ``[1, P, H, D]``) and the camera head's (its trunk runs on the camera token only).
    """
    cache, camera = model.cache, model.camera_cache
    frames = s if n == 0 else 1
    qkv = keys[n % len(keys)].expand(frames, -1, -1, -1)
    cache.begin_step(frames, qkv.shape[1], StepMode.STORE)
    for layer in range(model.config.depth):
        cache.attend(layer, qkv, qkv, qkv)
    cache.end_step()
    camera.begin_step(frames, StepMode.STORE)
    with torch.autocast(features.device.type, enabled=False):
        model.camera_head(features.expand(frames, -1, -1), camera)
    camera.end_step()


def part_compiled(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """Our compiled step (``--compiled-level``) against our eager step, same cache, bf16."""
    frames = smooth_frames(args.compiled_frames, args.height, args.width, seed=17)
    t0 = time.perf_counter()
    eager = run_ours(args, frames, args.compiled_backend, torch.bfloat16)
    compiled = run_ours(args, frames, args.compiled_backend, torch.bfloat16, level=args.compiled_level)
    cmp = compare(compiled, eager)
    cmp["seconds"] = time.perf_counter() - t0
    payload["compiled"] = cmp
    print(f"\n## ours {args.compiled_backend} {args.compiled_level} vs eager (bf16)")
    print_table(buckets(cmp["per_frame"], args.scale_frames), ERR_COLUMNS)


def part_memory(args: argparse.Namespace, payload: dict[str, Any]) -> None:
    """GPU memory after given frame counts per policy, model frames or cache-only frames."""
    checkpoints = sorted(int(x) for x in args.memory_frames.split(","))
    total = checkpoints[-1]
    frames = smooth_frames(args.memory_distinct, args.height, args.width, seed=13)
    rows = []
    for spec in args.policies.split(","):
        policy, _, backend = spec.partition(":")
        backend = backend or ("flashinfer" if policy == "sliding_window" else "auto")
        t0 = time.perf_counter()
        row: dict[str, Any] = {"policy": policy, "backend": backend, "mode": args.memory_mode}
        try:
            model = ours_driver.build_ours(args.weights_py, args.seed, backend=backend, policy=policy,
                                           scale_frames=args.scale_frames, window=args.window,
                                           camera_iterations=args.camera_iterations, dtype=torch.bfloat16,
                                           cache_max_frames=args.cache_max_frames, preset=args.preset,
                                           device=args.device)
            s = args.scale_frames
            model.reset()
            c = model.config
            tokens = c.num_special_tokens + (args.height // c.patch_size) * (args.width // c.patch_size)
            dev = args.device
            gen = torch.Generator(device=dev).manual_seed(0)
            keys = [torch.randn(1, tokens, c.num_heads, c.head_dim, device=dev, generator=gen,
                                dtype=torch.bfloat16) for _ in range(4)]
            features = torch.randn(1, 1, c.camera_dim, device=dev, generator=gen)
            _sync()
            row["alloc_mib_start"] = _allocated()
            for n in range(0, total - s + 1):
                # n = 0: the scale frames in one step, then one frame per step
                if args.memory_mode == "model":
                    batch = frames[:s] if n == 0 else frames[n % args.memory_distinct][None]
                    ours_driver.step(model, batch.to(dev), s)
                else:
                    _drive_caches(model, n, keys, features, s)
                done = s + n
                if done % 100 == 0:
                    # progress with the rate, so a run cut by its time limit still tells its speed
                    print(f"  {policy}: {done} frames, {time.perf_counter() - t0:.0f}s, "
                          f"{_allocated():.0f} MiB", flush=True)
                if done in checkpoints:
                    _sync()
                    stats = model.cache_stats()
                    row[f"alloc_mib_{done}"] = _allocated()
                    row[f"reserved_mib_{done}"] = torch.cuda.memory_reserved() / MIB if _cuda() else 0.0
                    row[f"cache_tokens_{done}"] = stats.tokens_max
                    row[f"cache_mib_{done}"] = stats.bytes_allocated / MIB
                    row[f"camera_frames_{done}"] = getattr(model.camera_cache, "frames_stored", None)
            first, last = checkpoints[0], checkpoints[-1]
            key = "alloc_mib" if _cuda() else "cache_mib"
            row["growth_pct"] = 100.0 * (row[f"{key}_{last}"] / row[f"{key}_{first}"] - 1.0)
            row["peak_mib"] = torch.cuda.max_memory_allocated() / MIB if _cuda() else 0.0
            del model
        except Exception as exc:  # a policy or backend that does not run: record it, go on
            row["error"] = repr(exc)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(row, flush=True)
        _free()
    payload["memory"] = rows
    first, last = checkpoints[0], checkpoints[-1]
    print(f"\n## GPU memory per cache policy ({args.memory_mode} frames, cache_max_frames "
          f"{args.cache_max_frames})")
    print_table(rows, [("policy", "policy", ""), ("backend", "backend", ""),
                       (f"alloc MiB @{first}", f"alloc_mib_{first}", ".1f"),
                       (f"alloc MiB @{last}", f"alloc_mib_{last}", ".1f"), ("growth %", "growth_pct", ".2f"),
                       (f"cache tokens @{first}", f"cache_tokens_{first}", ""),
                       (f"cache tokens @{last}", f"cache_tokens_{last}", ""),
                       ("seconds", "seconds", ".0f"), ("error", "error", "")])


def main(argv: list[str] | None = None) -> int:
    p = benchmark_parser(__doc__)
    add_model_arguments(p, seed=20261122, dtype=False)
    p.add_argument("--reference", default="", help="directory holding lingbot_map/ (part model)")
    p.add_argument("--parts", default="model,cache,memory")
    p.add_argument("--model-frames", type=int, default=100, help="streaming frames of part model")
    p.add_argument("--fp32-floor", action="store_true", help="part model: also the reference in fp32")
    p.add_argument("--model-backend", default="dense", help="our cache backend in part model")
    p.add_argument("--model-level", default="none", help="part model: ours' compile level (ours_driver)")
    p.add_argument("--half-heads", action="store_true",
                   help="part model: also ours with the node's fp16 heads (model.half_depth_head and "
                        "model.half_camera_head; the camera head alone sets pose_enc, the depth head depth)")
    p.add_argument("--cache-frames", type=int, default=200, help="frames in all of part cache")
    p.add_argument("--cache-backends", default="flashinfer",
                   help="part cache: comma list of our backends, each vs dense, the first vs the rest")
    p.add_argument("--compiled-level", default="compiled")
    p.add_argument("--compiled-backend", default="flashinfer")
    p.add_argument("--compiled-frames", type=int, default=40)
    p.add_argument("--policies",
                   default="sliding_window:flashinfer,sliding_window:dense,evict3r,infinitevggt",
                   help="comma list of policy[:backend]")
    p.add_argument("--memory-mode", default="cache", choices=["cache", "model"],
                   help="cache: the caches and the camera head only, at the real sizes (fast); "
                        "model: full model steps")
    p.add_argument("--cache-max-frames", type=int, default=1024, help="the node's default bound")
    p.add_argument("--memory-frames", default="200,2000", help="frame counts at which memory is read")
    p.add_argument("--memory-distinct", type=int, default=16, help="distinct input frames, cycled")
    args = p.parse_args(argv)
    payload: dict[str, Any] = {"device": device_info(), "args": vars(args)}
    print(payload["device"], flush=True)
    for part in args.parts.split(","):
        fn = {"model": part_model, "cache": part_cache, "memory": part_memory,
              "compiled": part_compiled}[part]
        try:
            fn(args, payload)
        except Exception as exc:
            import traceback  # noqa: PLC0415

            traceback.print_exc()
            payload[part] = {"error": repr(exc)}
        write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
