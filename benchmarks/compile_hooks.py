"""torch.compile (CUDA graphs) of our model's fixed-shape pieces, applied from outside the model.

The model keeps one ``Block`` class for every block kind and passes token mixing as a closure,
so a global block cannot be compiled whole: its cache call changes shapes every frame. This
module splits each global block into a compiled *pre* part (norm1, qkv, qk-norm, RoPE) and a
compiled *post* part (projection, LayerScale, residual, MLP), with the cache call eager in
between (the reference compiles the same pieces). It calls the model's own submodules and its
own ``Rotation``; ``check_split`` proves the split equals the block bit for bit before use.

If this pays, the clean version belongs in the model (see benchmarks/README.md, proposals).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

import gct_stream_ros.model.aggregator as aggregator_module

REDUCE_OVERHEAD = "reduce-overhead"


class GlobalMixer:
    """What ``aggregator._across_frames`` returns, with its parts visible to ``SplitBlock``."""

    def __init__(self, cache: Any, layer: int, rotation: Any):
        self.cache, self.layer, self.rotation = cache, layer, rotation

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # the same computation as the model's own mixer
        flat = (q.shape[0] * q.shape[1], *q.shape[2:])
        q = self.rotation(q.reshape(flat)).reshape(q.shape)
        k = self.rotation(k.reshape(flat)).reshape(k.shape)
        return self.cache.attend(self.layer, q, k, v)


def _pre(block: nn.Module, x: torch.Tensor, rotation: Any) -> tuple[torch.Tensor, ...]:
    attn = block.attn
    q, k, v = attn.qkv(block.norm1(x)).unflatten(-1, (3, attn.num_heads, attn.head_dim)).unbind(-3)
    q, k = attn.q_norm(q), attn.k_norm(k)
    flat = (q.shape[0] * q.shape[1], *q.shape[2:])
    return (rotation(q.reshape(flat)).reshape(q.shape), rotation(k.reshape(flat)).reshape(k.shape), v)


def _post(block: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    x = x + block.ls1(block.attn.proj(out.flatten(-2)))
    return x + block.ls2(block.mlp(block.norm2(x)))


class SplitBlock(nn.Module):
    """A global block run as compiled pre -> eager cache attend -> compiled post."""

    def __init__(self, block: nn.Module, compile_mode: str | None, clone_kv: bool):
        super().__init__()
        self.block = block
        self.clone_kv = clone_kv

        def pre(x: torch.Tensor, rotation: Any) -> tuple[torch.Tensor, ...]:
            return _pre(block, x, rotation)

        def post(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
            return _post(block, x, out)

        self.pre = torch.compile(pre, mode=compile_mode) if compile_mode else pre
        self.post = torch.compile(post, mode=compile_mode) if compile_mode else post

    def forward(self, x: torch.Tensor, mix: Any) -> torch.Tensor:
        if not isinstance(mix, GlobalMixer):
            return self.block(x, mix)
        q, k, v = self.pre(x, mix.rotation)
        if self.clone_kv:
            # graph outputs are overwritten by the next replay: a cache that keeps references
            # (the dense cache keeps bf16 v as is) needs its own copy
            k, v = k.clone(), v.clone()
        return self.post(x, mix.cache.attend(mix.layer, q, k, v))


def install_mixer() -> None:
    """Make the aggregator build ``GlobalMixer`` objects (same math as its own closures)."""
    aggregator_module._across_frames = GlobalMixer


class _SelfAttentionCache:
    """A stand-in cache for ``check_split``: attends the step's own keys, stores nothing."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from gct_stream_ros.cache.attention import dense_attention  # noqa: PLC0415

        return dense_attention(q, k.flatten(0, 1), v.flatten(0, 1))


@torch.no_grad()
def check_split(block: nn.Module, rotation: Any, x: torch.Tensor, dtype: torch.dtype) -> float:
    """Max abs difference between the block and its eager split on ``x`` (0.0 expected)."""
    cache = _SelfAttentionCache()
    split = SplitBlock(block, compile_mode=None, clone_kv=False)
    autocast = torch.autocast(x.device.type, dtype=dtype, enabled=dtype != torch.float32)
    with autocast:
        ref = block(x, GlobalMixer(cache, 0, rotation))
        out = split(x, GlobalMixer(cache, 0, rotation))
    return float((ref - out).abs().max())


def apply(model: Any, level: str, clone_kv: bool) -> dict[str, Any]:
    """Compile ``level`` (``blocks``, ``+global``, ``+heads``) of ``model``; returns a report."""
    report: dict[str, Any] = {"level": level}
    if level == "none":
        return report
    # every block kind shares Block.forward: dozens of instances of one code object would hit
    # dynamo's default limit of 8 compiled variants and silently run eager past it
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                 "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 512))
    agg = model.aggregator
    if level.startswith("graphed"):
        install_graphed(model, clone_kv, heads="heads" in level)
        return report
    if level.startswith("fused"):
        install_fused(model, REDUCE_OVERHEAD, clone_kv)
        if "heads" in level:
            model.depth_head = torch.compile(model.depth_head, mode=REDUCE_OVERHEAD)
        return report
    for blocks in (agg.frame_blocks, agg.patch_embed.blocks):
        for i, block in enumerate(blocks):
            blocks[i] = torch.compile(block, mode=REDUCE_OVERHEAD)
    if "global" in level:
        from gct_stream_ros.model.rope import frame_positions_3d, rope_3d  # noqa: PLC0415

        install_mixer()
        c = model.config
        device = model.camera_head.embed_pose.weight.device
        positions = frame_positions_3d(torch.arange(3, 4), 27, 36, c.num_special_tokens).to(device)
        rotation = rope_3d(positions, c.rope3d_split, c.rope3d_theta)
        x = torch.randn(1, positions.shape[0], c.embed_dim, device=device)
        report["split_check_max_abs"] = check_split(agg.global_blocks[0], rotation, x, model.inference_dtype)
        for i, block in enumerate(agg.global_blocks):
            agg.global_blocks[i] = SplitBlock(block, REDUCE_OVERHEAD, clone_kv)
    if "heads" in level:
        model.depth_head = torch.compile(model.depth_head, mode=REDUCE_OVERHEAD)
    return report


# --- "fused": one compiled region per layer instead of three ------------------------------------
#
# Everything between two cache calls has a fixed shape: global post (layer l-1) -> frame block l
# -> global pre (layer l). Compiling that as one region cuts the compiled calls per frame from
# 97 (24 DINO + 24 frame + 2x24 global + heads) to 27 (DINO whole, 25 segments, heads): each
# call of a compiled region costs ~0.1-0.2 ms of host time (guards, graph-tree bookkeeping),
# and the step is host-bound.


def _segment(prev_global: nn.Module | None, frame_block: nn.Module, global_block: nn.Module | None,
             keep_prev: bool) -> Any:
    from gct_stream_ros.model.attention import self_attention  # noqa: PLC0415

    def segment(x: torch.Tensor, attn_out: torch.Tensor | None, frame_prev: torch.Tensor | None,
                frame_rotation: Any, global_rotation: Any) -> tuple[Any, ...]:
        selected = None
        if prev_global is not None:
            x = _post(prev_global, x, attn_out)
            if keep_prev:
                selected = torch.cat((frame_prev, x), dim=-1)
        if frame_block is None:
            return x, None, None, None, None, selected

        def within_frame(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return self_attention(frame_rotation(q), frame_rotation(k), v)

        x = frame_block(x, within_frame)
        q, k, v = _pre(global_block, x, global_rotation)
        return x, x, q, k, v, selected

    return segment


class FusedLayers:
    """The aggregator's forward with per-layer fused regions (same math, verified by ``check_fused``)."""

    def __init__(self, agg: nn.Module, compile_mode: str | None, clone_kv: bool):
        self.agg = agg
        self.clone_kv = clone_kv
        depth = len(agg.frame_blocks)
        selected = set(agg.config.selected_layers)
        wrap = (lambda fn: torch.compile(fn, mode=compile_mode)) if compile_mode else (lambda fn: fn)
        self.segments = [wrap(_segment(agg.global_blocks[layer - 1] if layer else None,
                                       agg.frame_blocks[layer] if layer < depth else None,
                                       agg.global_blocks[layer] if layer < depth else None,
                                       (layer - 1) in selected))
                         for layer in range(depth + 1)]
        self.dino = wrap(agg.patch_embed.forward)

    def __call__(self, images: torch.Tensor, cache: Any, mode: Any,
                 num_scale_frames: int) -> list[torch.Tensor]:
        from gct_stream_ros.model.rope import frame_positions_2d, rope_2d  # noqa: PLC0415

        agg, c = self.agg, self.agg.config
        num_frames, _, height, width = images.shape
        grid_h, grid_w = height // c.patch_size, width // c.patch_size
        first_position = cache.frames_stored
        patches = self.dino((images - agg._resnet_mean) / agg._resnet_std)
        specials = agg.special_tokens(first_position, num_frames, num_scale_frames)
        tokens = torch.cat((specials, patches), dim=1)
        frame_rotation = rope_2d(frame_positions_2d(grid_h, grid_w, c.num_special_tokens).to(images.device),
                                 c.head_dim, c.rope_frequency)
        global_rotation = agg._global_rotation(first_position, num_frames, grid_h, grid_w, images.device)
        outputs = []
        cache.begin_step(num_frames, tokens.shape[1], mode)
        x, attn, frame_prev = tokens, None, None
        for layer, segment in enumerate(self.segments):
            x, frame_out, q, k, v, selected = segment(x, attn, frame_prev, frame_rotation, global_rotation)
            if selected is not None:
                outputs.append(selected)
            if q is None:
                break
            if self.clone_kv:
                k, v = k.clone(), v.clone()
            attn = cache.attend(layer, q, k, v)
            frame_prev = frame_out
        cache.end_step()
        return outputs


def install_fused(model: Any, compile_mode: str | None, clone_kv: bool) -> FusedLayers:
    fused = FusedLayers(model.aggregator, compile_mode, clone_kv)
    model.aggregator.forward = fused  # instance attribute: nn.Module.__call__ finds it first
    return fused


# --- "graphed": manual CUDA graphs instead of CUDA-graph trees ----------------------------------
#
# With "fused", each of the ~27 compiled regions still costs ~0.2-0.3 ms of host time per call in
# torch.compile's guards and CUDA-graph-tree bookkeeping, and the step stays host-bound. Here the
# same regions are compiled without CUDA graphs (Inductor kernels only) and captured once per
# input signature into a plain ``torch.cuda.CUDAGraph``; a call copies its inputs into the static
# buffers and replays (~20 us). Outputs are static buffers, valid until the same region runs
# again (next frame): every consumer (the cache copies K/V into its pages, the heads) uses them
# within the step. Only single-frame calls are graphed; phase 1 runs the compiled code directly.


class Graphed:
    """A fixed-shape callable replayed from a manual CUDA graph, one capture per signature."""

    def __init__(self, fn: Any, name: str = ""):
        self.fn, self.name = fn, name
        self.entries: dict[Any, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], Any]] = {}

    def __call__(self, *args: Any) -> Any:
        from torch.utils._pytree import tree_flatten  # noqa: PLC0415

        flat, spec = tree_flatten(args)
        tensors = [t for t in flat if torch.is_tensor(t)]
        if not tensors or tensors[0].shape[0] != 1 or not tensors[0].is_cuda:
            return self.fn(*args)
        key = (spec, tuple((tuple(t.shape), t.dtype) if torch.is_tensor(t) else t for t in flat))
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = self._capture(flat, spec)
        graph, static, out = entry
        for dst, src in zip(static, tensors):
            dst.copy_(src)
        graph.replay()
        return out

    def _capture(self, flat: list[Any], spec: Any) -> tuple[torch.cuda.CUDAGraph, list[torch.Tensor], Any]:
        from torch.utils._pytree import tree_unflatten  # noqa: PLC0415

        static_flat = [t.clone() if torch.is_tensor(t) else t for t in flat]
        static = [t for t in static_flat if torch.is_tensor(t)]
        args = tree_unflatten(static_flat, spec)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # compile / autotune / lazy init outside the capture
                self.fn(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fn(*args)
        return graph, static, out


class _PlainRotation:
    """Duck-typed ``Rotation`` built inside a compiled region (dynamo cannot construct the frozen
    dataclass: its generated ``__hash__`` runs before the fields exist); same ``__call__``."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool):
        self.cos, self.sin, self.interleaved = cos, sin, interleaved

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from gct_stream_ros.model.rope import Rotation  # noqa: PLC0415

        return Rotation.__call__(self, x)  # the model's own rotation code


def _rotation_free(segment: Any) -> Any:
    """The segment with its two rotations passed as plain tensors (graph inputs)."""

    def run(x: torch.Tensor, attn: Any, frame_prev: Any, fcos: torch.Tensor, fsin: torch.Tensor,
            gcos: torch.Tensor, gsin: torch.Tensor) -> tuple[Any, ...]:
        frame_rotation, global_rotation = _PlainRotation(fcos, fsin, False), _PlainRotation(gcos, gsin, True)
        return segment(x, attn, frame_prev, frame_rotation, global_rotation)

    return run


class GraphedLayers(FusedLayers):
    """``FusedLayers`` whose regions are Inductor-compiled and replayed from manual CUDA graphs."""

    def __init__(self, agg: nn.Module, clone_kv: bool):
        super().__init__(agg, compile_mode=None, clone_kv=clone_kv)
        self.segments = [
            _GraphedSegment(Graphed(torch.compile(_rotation_free(seg), dynamic=False), f"seg{i}"))
            for i, seg in enumerate(self.segments)]
        self.dino = Graphed(torch.compile(agg.patch_embed.forward, dynamic=False), "dino")


class _GraphedSegment:
    def __init__(self, graphed: Graphed):
        self.graphed = graphed

    def __call__(self, x: torch.Tensor, attn: Any, frame_prev: Any, frame_rotation: Any,
                 global_rotation: Any) -> tuple[Any, ...]:
        return self.graphed(x, attn, frame_prev, frame_rotation.cos, frame_rotation.sin,
                            global_rotation.cos, global_rotation.sin)


def install_graphed(model: Any, clone_kv: bool, heads: bool) -> GraphedLayers:
    layers = GraphedLayers(model.aggregator, clone_kv)
    model.aggregator.forward = layers
    if heads:
        depth_head = model.depth_head
        graphed = Graphed(torch.compile(depth_head.forward, dynamic=False), "depth_head")
        depth_head.forward = graphed  # instance attribute, as for the aggregator
    return layers
