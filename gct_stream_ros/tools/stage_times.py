"""Where the offline tool's time goes, stage by stage, per input frame.

Stages, in the order a frame meets them (docs/tools.md, *Time per stage*):
- ``decode``, ``preprocess``: reading and decoding the input, resize and float conversion; on the
  reader thread (``tools/frame_reader.py``), so they overlap the network step of the previous frame;
- ``input wait``: the main thread waiting for the reader (the part of decode + preprocess that the
  overlap did not hide);
- ``step``: the network steps, one sample per frame that ran the network (a scale phase's step
  counts once, for all its frames; the push that starts a window also re-runs its scale phase);
- ``result``: turning a step's output into a ``FrameResult`` (pose, depth, world points), on the
  results thread (``DeferredResult.assemble``);
- ``output wait``: the main thread waiting for room in the results thread's queue (the part of the
  assembly and the writing that the overlap did not hide);
- ``messages``: the ROS messages of a final estimate (``frame_messages``, the fused map included);
- ``bag write``: serialising them and writing the bag.
``result`` runs on the results thread, ``messages`` and ``bag write`` on the writer thread (both
``stream/ordered_worker.py``), beside the next step. What the main thread does between two steps,
these stages' hand-overs and the session's own bookkeeping included, is measured whole: the frame
period minus the step (``between_steps_ms``), the time the GPU waits for the host.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

DECODE = "decode"
PREPROCESS = "preprocess"
INPUT_WAIT = "input wait"
STEP = "step"
RESULT = "result"
OUTPUT_WAIT = "output wait"
MESSAGES = "messages"
BAG_WRITE = "bag write"
STAGES = (DECODE, PREPROCESS, INPUT_WAIT, STEP, RESULT, OUTPUT_WAIT, MESSAGES, BAG_WRITE)
BESIDE_THE_STEP = {DECODE: "reader", PREPROCESS: "reader", RESULT: "results", MESSAGES: "writer",
                   BAG_WRITE: "writer"}
"""Stages run on another thread while the main thread steps the network."""


@dataclass
class StageTimes:
    """Durations (ms) of each stage, one entry per occurrence (a frame, a step, a written result)."""

    samples: dict[str, list[float]] = field(default_factory=lambda: {stage: [] for stage in STAGES})
    frame_periods_ms: list[float] = field(default_factory=list)
    """Main-loop time from one input frame to the next (step and everything around it), for the frames
    that ran the network (not those that only joined a waiting scale phase)."""
    between_steps_ms: list[float] = field(default_factory=list)
    """For the same frames, the frame period minus the step: the main thread's time besides the step."""

    def add(self, stage: str, milliseconds: float) -> None:
        self.samples[stage].append(milliseconds)

    def add_period(self, period_ms: float, step_ms: float) -> None:
        """One frame that ran the network: its main-loop period and the step inside it."""
        self.frame_periods_ms.append(period_ms)
        self.between_steps_ms.append(period_ms - step_ms)

    def per_frame_ms(self, stage: str, frames: int) -> float:
        """The stage's total time spread over the input frames."""
        return sum(self.samples[stage]) / frames if frames else 0.0

    def median_ms(self, stage: str) -> float:
        """The typical occurrence: steady state, unaffected by the few steps that compile."""
        return statistics.median(self.samples[stage]) if self.samples[stage] else 0.0

    def main_thread_ms(self) -> float:
        """Median main-thread time per frame besides the step (the GPU idles meanwhile)."""
        return statistics.median(self.between_steps_ms) if self.between_steps_ms else 0.0

    def main_thread_share(self) -> float:
        """``main_thread_ms`` as a fraction of the median step."""
        step = self.median_ms(STEP)
        return self.main_thread_ms() / step if step else 0.0

    def text(self, frames: int) -> str:
        lines = ["  time per stage, ms (mean per input frame / median per occurrence):"]
        for stage in STAGES:
            where = f" [{BESIDE_THE_STEP[stage]} thread, beside the step]" if stage in BESIDE_THE_STEP else ""
            mean = self.per_frame_ms(stage, frames)
            lines.append(f"    {stage:<11} {mean:8.2f} / {self.median_ms(stage):8.2f}{where}")
        if self.frame_periods_ms:
            period = statistics.median(self.frame_periods_ms)
            lines.append(f"  median frame period {period:.2f} ms ({1000.0 / period:.1f} frames/s once warm)")
        lines.append(f"  main thread besides the step (median frame period - step): "
                     f"{self.main_thread_ms():.2f} ms = {100.0 * self.main_thread_share():.1f} % of the step")
        return "\n".join(lines)
