"""Whole streaming steps replayed from CUDA graphs: no host work per kernel in the steady state.

A single-frame step of the model launches ~1,500 kernels; launched one by one from Python the
host, not the GPU, sets the step time (``benchmarks/README.md``). Its shapes are fixed, and every
number that changes from one step to the next (the temporal index of the RoPE, the cache slots,
the key ranges) is read from device tensors (``cache/step_values.py``), so one capture of the
step's kernels serves every later step with the same *key*: the image size and what the caches
report (``GlobalKVCache.graph_key``: the storage, and once the window is full the key count).

A key is captured the second time it is seen: the first step runs eagerly, which compiles what
``torch.compile`` has to compile and lets cuDNN build its execution plans, neither of which may
happen inside a capture. The captured step's inputs and outputs are the graph's own buffers: the
images are copied in, the outputs cloned out (the next replay overwrites them). At most
``max_graphs`` graphs are kept (the least recently used go), all in one memory pool, and only
those of the current ``storage`` (the caches' tensors they read: a grown cache's old storage is
released with its graphs). A key whose
capture fails (an operation that cannot be captured) is logged once and runs eagerly from then on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch

from gct_stream_ros.model.network import StepOutput

LOG = logging.getLogger(__name__)

DEFAULT_MAX_GRAPHS = 4
"""Graphs kept: the window filling, its steady state for keyframes and for other frames, one spare."""


@dataclasses.dataclass
class _CapturedStep:
    graph: torch.cuda.CUDAGraph
    images: torch.Tensor
    output: StepOutput


class StepGraphs:
    """Captures and replays the steps of one model (see the module docstring)."""

    def __init__(self, max_graphs: int = DEFAULT_MAX_GRAPHS):
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, not {max_graphs}")
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[Hashable, _CapturedStep] = OrderedDict()
        self._seen: set[Hashable] = set()
        self._failed: set[Hashable] = set()
        self._pool: tuple[int, int] | None = None
        self._storage: Hashable = None
        self.captures = 0
        self.replays = 0

    def clear(self) -> None:
        """Forget every graph (their storage, e.g. a cache's, was replaced)."""
        self._graphs.clear()
        self._seen.clear()
        self._failed.clear()

    def run(self, key: Hashable, images: torch.Tensor, step: Callable[[torch.Tensor], StepOutput],
            storage: Hashable = None) -> StepOutput:
        """``step(images)``, replayed from the graph of ``key`` when there is one; ``storage``
        identifies the tensors the step reads and writes besides ``images``."""
        if storage != self._storage:
            self._graphs.clear()
            self._storage = storage
        captured = self._graphs.get(key)
        if captured is None:
            if key not in self._seen or key in self._failed:
                self._seen.add(key)
                return step(images)
            while len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)
            try:
                captured = self._capture(images, step)
            except RuntimeError as error:
                self._failed.add(key)
                LOG.warning("cannot capture a CUDA graph of the step for %s, running it eagerly: %s",
                            key, error)
                return step(images)
            self._graphs[key] = captured
            self.captures += 1
            LOG.debug("captured a step graph for %s (%d held)", key, len(self._graphs))
        else:
            self._graphs.move_to_end(key)
            captured.images.copy_(images)
        captured.graph.replay()
        self.replays += 1
        return _cloned(captured.output)

    def _capture(self, images: torch.Tensor, step: Callable[[torch.Tensor], StepOutput]) -> _CapturedStep:
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        static_images = images.clone()
        graph = torch.cuda.CUDAGraph()
        # thread_local: CUDA calls of the node's other threads (diagnostics, image decoding) during
        # the capture are theirs, not part of it and not an error
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            output = step(static_images)
        return _CapturedStep(graph, static_images, output)


def _cloned(output: StepOutput) -> StepOutput:
    return StepOutput(**{field.name: None if (value := getattr(output, field.name)) is None else value.clone()
                         for field in dataclasses.fields(output)})
