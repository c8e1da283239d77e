"""The CPU benchmarks run (tiny sizes) and print their tables, so they cannot rot between GPU sessions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cache_step_times_every_policy(capsys):
    arguments = ["--frames", "4", "--layers", "2", "--heads", "2", "--patches", "8", "--scale-frames", "2",
                 "--window", "3", "--max-frames", "6", "--threads", "1"]
    assert _load("cache_step").main(arguments) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ")[0] for line in lines if line.startswith("| ") and "(ms)" not in line]
    assert rows == ["| sliding_window", "| evict3r", "| infinitevggt"]


def test_node_overhead_measures_every_stage(capsys):
    pytest.importorskip("rclpy", reason="the publishing stage needs rclpy")
    assert _load("node_overhead").main(["--frames", "2", "--input", "64x48", "--width", "56"]) == 0
    out = capsys.readouterr().out
    for stage in ("decode Image rgb8", "resize (pil)", "resize (torch)", "FrameResult", "PointCloud2 packing",
                  "publish", "total, rgb8 input, model.resize torch"):
        assert stage in out


def test_scale_sources_time_every_source_and_recover_the_scale(capsys):
    assert _load("scale_sources").main(["--frames", "2", "--width", "56", "--sensor", "64x48"]) == 0
    out = capsys.readouterr().out
    stages = ("odometry increment", "depth ratio (64x48 sensor)", "camera_height floor fit", "scale_result")
    assert all(stage in out for stage in stages)
    assert "depth: 2.70" in out and "camera_height: 2.7" in out
