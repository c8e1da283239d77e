"""``GCTModel``: the GCT network with its caches, driven one step at a time (``StreamingNetwork``).

State-dict keys and shapes equal the reference ``GCTStream``'s, so its checkpoints load
strictly. Precision: fp32 by default; ``to_inference_dtype(torch.bfloat16)`` reproduces the
GPU recipe of the reference's demo: the aggregator's parameters and normalisation constants are
cast, the aggregator runs under autocast, the heads run in fp32 on fp32 features;
``half_depth_head`` runs the DPT heads under fp16 autocast instead, ``half_camera_head`` the camera
head's trunk with fp16 linear layers (faster, not the reference's recipe; fp16, not bf16:
``benchmarks/README.md`` measures what each costs against the reference).

A step is host bookkeeping (the caches' ``begin_step``/``end_step``, which also set the step's
device-side numbers) around device work (``_forward``); with ``replay_steps`` the device work of
single-frame steps is replayed from CUDA graphs (``step_graphs.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import nn

from gct_stream_ros.cache.base import CacheStats, GlobalKVCache, StepMode
from gct_stream_ros.cache.dense import DenseKVCache
from gct_stream_ros.cache.step_values import StepValues
from gct_stream_ros.model.aggregator import Aggregator
from gct_stream_ros.model.camera_cache import CameraKVCache
from gct_stream_ros.model.camera_head import CameraHead
from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.dpt_head import DPTHead, activate_depth, activate_points
from gct_stream_ros.model.network import StepOutput
from gct_stream_ros.model.step_graphs import DEFAULT_MAX_GRAPHS, StepGraphs


class GCTModel(nn.Module):
    """The streaming network; ``cache`` defaults to a ``DenseKVCache`` built from the config.

    A cache given by the caller is the caller's: ``to_inference_dtype`` only rebuilds the default
    one. Changing the image size requires ``reset()`` (caches hold a fixed tokens-per-frame).
    """

    def __init__(self, config: GCTConfig, cache: GlobalKVCache | None = None):
        super().__init__()
        if not config.enable_depth:
            raise ValueError("the streaming network needs the depth head (enable_depth=True)")
        self.config = config
        self.aggregator = Aggregator(config)
        self.camera_head = CameraHead(config)
        self.depth_head = DPTHead(config, output_dim=2)
        self.point_head = DPTHead(config, output_dim=4) if config.enable_point else None
        self.inference_dtype = torch.float32
        self.half_depth_head = False
        self._owns_cache = cache is None
        self.cache = cache if cache is not None else self._default_cache(torch.float32)
        self.camera_cache = CameraKVCache(config.camera_iterations, config.camera_depth, config.scale_frames,
                                          config.max_frames)
        self._compile_options: dict[str, object] | None = None  # torch.compile's, for a cache given later
        self.step_graphs: StepGraphs | None = None
        self._position: StepValues | None = None  # the first frame's temporal index, on the device

    def _default_cache(self, dtype: torch.dtype) -> DenseKVCache:
        c = self.config
        return DenseKVCache(c.depth, c.num_special_tokens, c.scale_frames, c.sliding_window, c.max_frames,
                            dtype)

    def materialize(self, device: torch.device | str) -> GCTModel:
        """Allocate (uninitialised) storage for a model built on the ``meta`` device."""
        self.to_empty(device=device)
        self.aggregator.reset_constants()
        return self

    def to_inference_dtype(self, dtype: torch.dtype, half_depth_head: bool = False,
                           half_camera_head: bool = False) -> GCTModel:
        """Run the aggregator in ``dtype`` (bf16/fp16 on GPU); the heads and outputs stay fp32, except
        the DPT heads' arithmetic under fp16 autocast with ``half_depth_head`` and the camera head's
        trunk linear layers in fp16 with ``half_camera_head`` (``CameraHead.half_trunk``)."""
        self.aggregator.to(dtype)
        self.inference_dtype = dtype
        self.half_depth_head = half_depth_head and dtype != torch.float32
        if half_camera_head and dtype != torch.float32:
            self.camera_head.half_trunk()
        if self._owns_cache:
            self.cache = self._default_cache(dtype)
        return self

    def compile_regions(self, mode: str | None = None, backend: str = "inductor") -> GCTModel:
        """``torch.compile`` the fixed-shape parts: the patch embedding, the aggregator's layer
        segments and the camera head's (everything between two cache calls), the DPT heads, and
        what the global cache compiles of its own (``GlobalKVCache.compile_regions``); the caches'
        bookkeeping stays eager.

        No CUDA graphs of torch.compile's own (``mode`` None): ``replay_steps`` captures whole steps,
        compiled regions included. Each new input shape (the scale phase, a new image size)
        compiles again, once.
        """
        # The segments share one code object, so each layer and shape is a recompilation of it:
        # dynamo's default limit (8) would silently leave most layers eager.
        limit = 8 * (self.config.depth + 1)
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))
        options = {"mode": mode, "backend": backend, "dynamic": False}
        self._compile_options = options
        self.aggregator.compile_regions(**options)
        self.camera_head.compile_regions(**options)
        self.cache.compile_regions(**options)
        # compiled methods as instance attributes: the state dict keeps its keys
        for head in filter(None, (self.depth_head, self.point_head)):
            head._decode = torch.compile(head._decode, **options)
        return self

    @property
    def compiled(self) -> bool:
        """Whether ``compile_regions`` ran."""
        return self._compile_options is not None

    def use_cache(self, cache: GlobalKVCache) -> GCTModel:
        """Attend through ``cache`` from now on, as a new sequence: compiled like the model's regions
        when they are, with fresh step graphs when steps are replayed (the old ones read the old
        storage). Lets one compiled model run several cache policies (``benchmarks/policy_fidelity.py``)."""
        self.cache = cache
        self._owns_cache = False
        if self._compile_options is not None:
            cache.compile_regions(**self._compile_options)
        if self.step_graphs is not None:
            self.replay_steps()
        self.reset()
        return self

    def replay_steps(self, graphs: StepGraphs | None = None) -> GCTModel:
        """Replay single-frame CUDA steps from CUDA graphs (``step_graphs.py``) when the caches allow; by
        default one graph more per steady step key the cache cycles through beyond the first."""
        if graphs is None:
            graphs = StepGraphs(DEFAULT_MAX_GRAPHS + self.cache.steady_graph_keys - 1)
        self.step_graphs = graphs
        return self

    @torch.no_grad()
    def step(self, images: torch.Tensor, mode: StepMode = StepMode.STORE,
             num_scale_frames: int | None = None) -> StepOutput:
        """See ``StreamingNetwork.step``: images ``[S, 3, H, W]`` in [0, 1] at model resolution."""
        num_scale_frames = self.config.scale_frames if num_scale_frames is None else num_scale_frames
        num_frames, _, height, width = images.shape
        device = self.camera_head.embed_pose.weight.device
        images = images.to(device=device, dtype=torch.float32)
        first_position = self.cache.frames_stored
        patches = (height // self.config.patch_size) * (width // self.config.patch_size)
        self.cache.begin_step(num_frames, self.config.num_special_tokens + patches, mode)
        self.camera_cache.begin_step(num_frames, mode)
        if self._position is None or self._position.values.device != device:
            self._position = StepValues(1, device)
        self._position.set([first_position])

        def forward(images: torch.Tensor) -> StepOutput:
            return self._forward(images, first_position, num_scale_frames)

        graph = self._graph_key(images, first_position, num_scale_frames)
        if graph is None:
            output = forward(images)
        else:
            key, storage = graph
            output = self.step_graphs.run(key, images, forward, storage=storage)
        self.cache.end_step()
        self.camera_cache.end_step()
        return output

    def _graph_key(self, images: torch.Tensor, first_position: int,
                   num_scale_frames: int) -> tuple[tuple, tuple] | None:
        """The step's CUDA-graph key and the storage it reads (the first element of each cache's key),
        or None when it runs eagerly: graphs off, several frames, a special-token variant that is
        not the steady one, or a cache that cannot (on the CPU, none can)."""
        if self.step_graphs is None or images.shape[0] != 1 \
                or first_position < max(num_scale_frames, 1):
            return None
        cache_key, camera_key = self.cache.graph_key(), self.camera_cache.graph_key()
        if cache_key is None or camera_key is None:
            return None
        return (tuple(images.shape), cache_key, camera_key), (cache_key[0], camera_key[0])

    def _forward(self, images: torch.Tensor, first_position: int, num_scale_frames: int) -> StepOutput:
        """The device work of a step whose caches have begun it."""
        num_frames, _, height, width = images.shape
        device = images.device
        frame_indices = self._position.values + torch.arange(num_frames, device=device)
        with self._aggregator_precision(device):
            layers = self.aggregator(images, self.cache, first_position, frame_indices, num_scale_frames)
        layers = [x.float() for x in layers]
        with _fp32(device):
            poses = self.camera_head(layers[-1], self.camera_cache)
        patch_start = self.config.num_special_tokens
        with self._depth_head_precision(device):
            raw_depth = self.depth_head(layers, (height, width), patch_start).float()
            raw_points = None if self.point_head is None else self.point_head(layers, (height, width),
                                                                              patch_start).float()
        depth, depth_conf = activate_depth(raw_depth)
        points = points_conf = None
        if raw_points is not None:
            points, points_conf = activate_points(raw_points)
        return StepOutput(pose_enc=poses[-1], depth=depth, depth_conf=depth_conf,
                          pose_enc_list=torch.stack(poses),
                          world_points=points, world_points_conf=points_conf)

    def commit(self) -> None:
        self.cache.commit()
        self.camera_cache.commit()

    def rollback(self) -> None:
        self.cache.rollback()
        self.camera_cache.rollback()

    def reset(self) -> None:
        self.cache.reset()
        self.camera_cache.reset()

    @property
    def frames_stored(self) -> int:
        return self.cache.frames_stored

    def cache_stats(self) -> CacheStats:
        return dataclasses.replace(self.cache.stats(), camera_head_bytes=self.camera_cache.nbytes)

    def _aggregator_precision(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.inference_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.inference_dtype)


    def _depth_head_precision(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.half_depth_head:
            return torch.autocast(device.type, dtype=torch.float16)
        return _fp32(device)


def _fp32(device: torch.device) -> contextlib.AbstractContextManager:
    """The heads run in fp32 even when the caller runs under autocast."""
    return torch.autocast(device.type, enabled=False)
