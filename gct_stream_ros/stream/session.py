"""The streaming engine: frames in, one estimate per frame out, online.

A sequence starts with a scale phase: the first ``num_scale_frames`` frames are collected and
run through the network together; nothing comes out before that, then all their results at
once. Every later frame is run on its own and gives its result in the same ``push``, stored in
the caches or not as the keyframe rule decides (``keyframes.py``). With ``window_mode='online'``
the caches restart every ``window_size`` stored frames and the windows are aligned into the
first one's frame (``windows.py``); the overlap frames a new window re-processes come out
again as revisions (``FrameResult.revision``) in the push that starts it.

Guarantees: every pushed frame gets exactly one first result, in push order, with its stamp;
revisions only concern frames already handed out. ``flush`` runs a scale phase that is still
waiting for frames with the frames it has (end of stream, or a sequence that ends early, as the
reference does for sequences shorter than the scale phase). An image whose model-resolution
size differs from the current sequence's ends that sequence (its waiting frames are flushed) and
starts a new one with a new world frame (``FrameResult.sequence`` increments; logged as a
warning). ``reset`` without a ``flush`` drops the waiting frames: each is counted
(``SessionStats.frames_dropped``) and the drop is logged, so no accepted frame vanishes silently.

``push_prepared_deferred`` and ``flush_deferred`` return the same results, in the same order, as
``DeferredResult`` s still to be assembled (``assemble``), so that a caller may assemble them on another
thread while the session steps the next frame; the other calls assemble them before returning.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import torch

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.model.network import StreamingNetwork
from gct_stream_ros.model.preprocess import ImageGeometry, resize_image, to_model_input
from gct_stream_ros.stream.config import EngineConfig
from gct_stream_ros.stream.device import resolve_device, resolve_dtype, resolve_resize
from gct_stream_ros.stream.estimate import FrameEstimate
from gct_stream_ros.stream.frame_assembly import DeferredResult, assemble_all
from gct_stream_ros.stream.input_frame import InputFrame, PreparedImage
from gct_stream_ros.stream.keyframes import keyframe_selector
from gct_stream_ros.stream.network_builder import build_network
from gct_stream_ros.stream.result import FrameResult, FrameType
from gct_stream_ros.stream.stats import SessionStats, StepTimes
from gct_stream_ros.stream.windows import WindowTracker

logger = logging.getLogger(__name__)


def _milliseconds_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


class StreamSession:
    """One stream of frames through a ``StreamingNetwork`` (see the module docstring).

    ``network=None`` builds the real model and its cache from ``config`` on the resolved
    device and precision.
    """

    def __init__(self, config: EngineConfig, network: StreamingNetwork | None = None) -> None:
        self.config = config.validate()
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.resize = resolve_resize(config.resize, self.dtype)
        self.network = network if network is not None else build_network(config, self.device, self.dtype)
        self._selector = keyframe_selector(config)
        self._step_times = StepTimes()
        self._next_index = 0
        self._emitted = 0
        self._revisions = 0
        self._keyframes = 0
        self._dropped = 0
        self._sequence = 0
        self._begin_sequence()

    def push(self, image: np.ndarray, stamp_ns: int) -> list[FrameResult]:
        """Add an ``[H, W, 3]`` uint8 RGB image; return the results that became available."""
        return self.push_prepared(self.prepare(image), stamp_ns)

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """The preprocessing of ``push`` alone: it reads only the settings, so another thread may prepare
        the next image while this one steps (the offline tool's reader does)."""
        start = time.perf_counter()
        rgb, geometry = resize_image(image, self.config.image_width, self.resize)
        return PreparedImage(image=to_model_input(rgb), geometry=geometry, rgb=rgb,
                             preprocess_ms=_milliseconds_since(start))

    def push_prepared(self, prepared: PreparedImage, stamp_ns: int) -> list[FrameResult]:
        """``push`` of an image that ``prepare`` already preprocessed."""
        return assemble_all(self.push_prepared_deferred(prepared, stamp_ns))

    def push_prepared_deferred(self, prepared: PreparedImage, stamp_ns: int) -> list[DeferredResult]:
        """``push_prepared`` up to the assembly: the network has run, the results are not assembled yet."""
        return self._accept(InputFrame(index=self._next_index, stamp_ns=stamp_ns, image=prepared.image,
                                       geometry=prepared.geometry, rgb=prepared.rgb,
                                       preprocess_ms=prepared.preprocess_ms))

    def push_tensor(self, image: torch.Tensor, stamp_ns: int,
                    geometry: ImageGeometry | None = None) -> list[FrameResult]:
        """Add an already preprocessed ``[3, H, W]`` float image in [0, 1] at model resolution.

        ``geometry`` (the preprocessing's ``ImageGeometry``) maps intrinsics to the input image;
        without it ``intrinsics_input`` equals ``intrinsics``.
        """
        return assemble_all(self._accept(InputFrame(index=self._next_index, stamp_ns=stamp_ns,
                                                  image=image.detach().float().cpu(), geometry=geometry)))

    def _accept(self, frame: InputFrame) -> list[DeferredResult]:
        self._next_index += 1
        results = []
        if self._model_hw is not None and frame.model_hw != self._model_hw:
            logger.warning("input size changed from %s to %s (model resolution): starting sequence %d",
                           self._model_hw, frame.model_hw, self._sequence + 1)
            results += self.flush_deferred()
            self._sequence += 1
            self._begin_sequence()
        self._model_hw = frame.model_hw
        self._pending.append(frame)
        return results + self._drain(final=False)

    def flush(self) -> list[FrameResult]:
        """Run whatever waits for a scale phase now, with fewer scale frames (end of stream)."""
        return assemble_all(self.flush_deferred())

    def flush_deferred(self) -> list[DeferredResult]:
        """``flush`` up to the assembly (see ``push_prepared_deferred``)."""
        return self._drain(final=True)

    def reset(self) -> None:
        """Forget the sequence: the next frame starts a new one (new world frame).

        Frames still waiting for the scale phase are dropped, counted and logged; call ``flush``
        first to keep them.
        """
        waiting = sum(not frame.revision for frame in self._pending)
        if waiting:
            self._dropped += waiting
            logger.warning("sequence %d reset: %d frame(s) waiting for the scale phase dropped without a "
                           "result", self._sequence, waiting)
        self._sequence += 1
        self._begin_sequence()

    @property
    def step_times(self) -> StepTimes:
        """A copy of the network step timings so far (``stats`` without the cache and counters)."""
        return replace(self._step_times)

    def stats(self) -> SessionStats:
        return SessionStats(
            frames_pushed=self._next_index, frames_emitted=self._emitted,
            frames_pending=sum(not frame.revision for frame in self._pending), frames_dropped=self._dropped,
            revisions=self._revisions, keyframes=self._keyframes, sequence=self._sequence,
            window=self._windows.index, frames_stored=self.network.frames_stored,
            step_times=self.step_times,
            cache=self.network.cache_stats(), device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."))

    def _begin_sequence(self) -> None:
        self.network.reset()
        self._pending: list[InputFrame] = []
        self._scale_count = 0
        """Scale frames of the current window; 0 while its scale phase has not run."""
        self._model_hw: tuple[int, int] | None = None
        self._windows = WindowTracker(self.config.window_mode == "online", self.config.window_size,
                                      self.config.window_overlap)

    def _drain(self, final: bool) -> list[DeferredResult]:
        results: list[DeferredResult] = []
        while self._pending:
            if not self._scale_count:
                if len(self._pending) < self.config.num_scale_frames and not final:
                    break
                batch = self._pending[:self.config.num_scale_frames]
                del self._pending[:len(batch)]
                results += self._run_scale_phase(batch)
            elif self._windows.is_full(self._selector.may_store_next()):
                self._pending[:0] = self._windows.start_next()
                self.network.reset()
                self._scale_count = 0
            else:
                results += self._run_streaming(self._pending.pop(0))
        return results

    def _run_scale_phase(self, batch: list[InputFrame]) -> list[DeferredResult]:
        start = time.perf_counter()
        images = torch.stack([frame.image for frame in batch]).to(self.device)
        output = self.network.step(images, StepMode.STORE, num_scale_frames=len(batch))
        self._selector.begin(output.pose_enc)
        estimates = [FrameEstimate.from_step(output, i, FrameType.SCALE) for i in range(len(batch))]
        step_ms = self._record_step(start)
        self._scale_count = len(batch)
        self._windows.stored = len(batch)
        return self._emit(batch, [replace(estimate, step_ms=step_ms) for estimate in estimates])

    def _run_streaming(self, frame: InputFrame) -> list[DeferredResult]:
        start = time.perf_counter()
        mode = self._selector.step_mode()
        image = frame.image[None].to(self.device)  # [1, 3, H, W]
        output = self.network.step(image, mode, num_scale_frames=self._scale_count)
        decision = self._selector.conclude(output)
        if mode == StepMode.DEFER:
            if decision.keyframe:
                self.network.commit()
            else:
                self.network.rollback()
        frame_type = FrameType.KEYFRAME if decision.keyframe else FrameType.NON_KEYFRAME
        estimate = FrameEstimate.from_step(output, 0, frame_type, decision.flow)
        step_ms = self._record_step(start)
        self._windows.stored += decision.keyframe
        self._keyframes += decision.keyframe
        return self._emit([frame], [replace(estimate, step_ms=step_ms)])

    def _record_step(self, start: float) -> float:
        """The step's milliseconds since ``start``, taken once its outputs are on the host: a GPU step
        returns as soon as it is queued (a replayed graph in ~1 ms), and the copy waits for it."""
        step_ms = _milliseconds_since(start)
        self._step_times.record(step_ms)
        return step_ms

    def _emit(self, frames: list[InputFrame], estimates: list[FrameEstimate]) -> list[DeferredResult]:
        windowed = self._windows.enabled
        results = []
        for frame, estimate in self._windows.place(frames, estimates):
            results.append(DeferredResult(
                frame, estimate, sequence=self._sequence, window=self._windows.index,
                window_scale=self._windows.scale if windowed else 1.0,
                window_transform=self._windows.transform if windowed else None,
                compute_points=self.config.compute_points))
            self._revisions += frame.revision
            self._emitted += not frame.revision
        return results

