"""The offline tool's main loop on the CPU, with a network whose step stands for a GPU step.

``gct_stream_offline``'s loop (reader thread, main thread, writer thread: the real bag, messages and
fused map) runs over ``--frames`` 640x480 JPEGs of the synthetic room, with the settings of the H200
run (``offline_h200.yaml``: 504x378, 8 scale frames, every frame a keyframe; ``--distinct`` views
rendered, the input cycling through them) and a stand-in network:
each step holds the main thread ``--step-ms`` without the GIL, as waiting for a GPU step does, and
returns outputs of the real shapes (the rendered depth and pose at 504x378). The GPU would idle
between two steps while the main thread does anything else, so the figure of merit is

* ``gap``: from the end of one streaming step (its start + ``--step-ms``) to the start of the next,
  per frame (the main thread's work between two steps, GIL waits included);
* ``cpu``: the main thread's own CPU time over the same gap (``time.thread_time``: without the waits for
  the GIL or for a core, so it tells the work left on the main thread apart from the contention, which
  on a loaded machine inflates ``gap``);
* ``period - step``: the median frame period of the tool's summary minus ``--step-ms``;
* ``writer``: the writer thread's ``messages`` and ``bag write`` (median ms per frame): it keeps up with
  the step only while their sum stays below the frame period.

Each run prints the tool's stage table; the last lines give the medians over ``--runs`` runs.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/offline_loop.py --frames 60 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from gct_stream_ros.cache.base import CacheStats, StepMode
from gct_stream_ros.model.network import StepOutput
from gct_stream_ros.model.pose_encoding import encode_pose
from gct_stream_ros.stamps import NS_PER_S
from gct_stream_ros.stream.synthetic import SyntheticFrame, SyntheticScene
from gct_stream_ros.tools.frame_source import open_frames
from gct_stream_ros.tools.offline import OfflineMapper, load_parameters
from gct_stream_ros.tools.stage_times import BAG_WRITE, MESSAGES

PARAMS_FILE = Path(__file__).with_name("offline_h200.yaml")
CPU_OVERRIDES = ["model.preset:=tiny", "model.checkpoint:=", "model.device:=cpu", "model.dtype:=float32",
                 "model.compile:=false"]
"""The stand-in replaces the model: no weights, no device."""
INPUT_WH = (640, 480)
MODEL_WH = (504, 378)
START_NS = 1_700_000_000 * NS_PER_S
WARM_STEPS = 3
"""Streaming steps left out of the gap statistics (first writes: type support, map allocation)."""


class SleepingNetwork:
    """``StreamingNetwork`` stand-in: a step sleeps until ``step_s`` after its start (the GIL released,
    as in a wait for the GPU) and returns the next rendered frames' depth and pose; it records when each
    step started."""

    def __init__(self, truth: list[SyntheticFrame], step_s: float) -> None:
        self.step_s = step_s
        self.steps: list[tuple[float, float, float, int]] = []
        """``(start, main-thread CPU time at the start and at the end, frames)`` of every step."""
        height, width = truth[0].depth.shape
        self._pose_enc = [encode_pose(torch.from_numpy(f.c2w), torch.from_numpy(f.intrinsics),
                                      (height, width)).float() for f in truth]
        self._depth = [torch.from_numpy(f.depth) for f in truth]
        self._next = 0
        self._stored = 0

    def step(self, images: torch.Tensor, mode: StepMode = StepMode.STORE,
             num_scale_frames: int | None = None) -> StepOutput:
        start, cpu_start = time.perf_counter(), time.thread_time()
        frames = [(self._next + i) % len(self._depth) for i in range(len(images))]
        self._next += len(images)
        self._stored += len(images) if mode != StepMode.SKIP else 0
        depth = torch.stack([self._depth[i] for i in frames])  # a fresh copy, as the device-to-host one
        output = StepOutput(pose_enc=torch.stack([self._pose_enc[i] for i in frames]), depth=depth,
                            depth_conf=torch.full_like(depth, 2.0))
        time.sleep(max(0.0, start + self.step_s - time.perf_counter()))
        self.steps.append((start, cpu_start, time.thread_time(), len(images)))
        return output

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        self._stored -= 1

    def reset(self) -> None:
        self._stored = 0

    @property
    def frames_stored(self) -> int:
        return self._stored

    def cache_stats(self) -> CacheStats:
        return CacheStats(frames_stored=self._stored, frames_evicted=0)

    def gaps_ms(self) -> tuple[list[float], list[float]]:
        """Per streaming step after the warm ones: the time from the previous step's end to its start, and
        the main thread's CPU time in between (a sleeping step uses none)."""
        streaming = [step for step in self.steps if step[3] == 1][WARM_STEPS:]
        pairs = list(zip(streaming, streaming[1:]))
        return ([(later[0] - earlier[0] - self.step_s) * 1e3 for earlier, later in pairs],
                [(later[1] - earlier[2]) * 1e3 for earlier, later in pairs])


def write_inputs(folder: Path, frames: list[SyntheticFrame], count: int) -> None:
    """``count`` 640x480 JPEGs (quality 92, as the H200 run's photographs) cycling through ``frames``."""
    jpegs = [cv2.imencode(".jpg", cv2.resize(f.image, INPUT_WH, interpolation=cv2.INTER_LINEAR)[..., ::-1],
                          [cv2.IMWRITE_JPEG_QUALITY, 92])[1] for f in frames]
    for index in range(count):
        (folder / f"{index:06d}.jpg").write_bytes(jpegs[index % len(jpegs)].tobytes())


def run_once(inputs: Path, output: Path, truth: list[SyntheticFrame],
             step_ms: float) -> tuple[float, float, float, float, float]:
    """One offline run; prints its summary, returns the medians of gap, cpu, period - step, messages and bag
    write in ms."""
    network = SleepingNetwork(truth, step_ms / 1e3)
    values = load_parameters(PARAMS_FILE, CPU_OVERRIDES)
    mapper = OfflineMapper(values, output, network=network, overwrite=True)
    summary = mapper.run(open_frames(inputs, fps=30.0, start_ns=START_NS), progress=False)
    print(summary.text())
    gaps, cpu = network.gaps_ms()
    period = statistics.median(summary.times.frame_periods_ms[WARM_STEPS:])
    spread = f"mean {statistics.fmean(gaps):.2f}, p90 {np.percentile(gaps, 90):.2f}, max {max(gaps):.2f}"
    print(f"  gap between steps (ms): median {statistics.median(gaps):.2f}, {spread}; main-thread cpu "
          f"{statistics.median(cpu):.2f}; frame period - step {period - step_ms:.2f}")
    writer = (statistics.median(summary.times.samples[stage]) for stage in (MESSAGES, BAG_WRITE))
    return statistics.median(gaps), statistics.median(cpu), period - step_ms, *writer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--distinct", type=int, default=20, help="views rendered (0.2 s each)")
    parser.add_argument("--step-ms", type=float, default=28.0, help="time of one stand-in step")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    truth = SyntheticScene(0).render_sequence(min(args.distinct, args.frames), *MODEL_WH)
    with tempfile.TemporaryDirectory() as scratch:
        inputs = Path(scratch) / "inputs"
        inputs.mkdir()
        write_inputs(inputs, truth, args.frames)
        results = []
        for run in range(args.runs):
            print(f"--- run {run + 1} of {args.runs}")
            results.append(run_once(inputs, Path(scratch) / "out", truth, args.step_ms))
    gap, cpu, excess, built, written = (statistics.median(values) for values in zip(*results))
    print(f"{args.frames} frames, step {args.step_ms:.1f} ms, median over {args.runs} runs: gap between "
          f"steps {gap:.2f} ms, main-thread cpu {cpu:.2f} ms, frame period - step {excess:.2f} ms; writer "
          f"thread: messages {built:.2f} + bag write {written:.2f} = {built + written:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
