"""The CPU benchmarks run (tiny sizes) and print their tables, so they cannot rot between GPU sessions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

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


def test_cache_step_compares_budgets_with_the_window_at_the_same_tokens(capsys):
    arguments = ["--frames", "6", "--layers", "2", "--heads", "2", "--patches", "8", "--scale-frames", "2",
                 "--window", "6", "--max-frames", "8", "--threads", "1", "--budgets", "1,0.5",
                 "--same-tokens", "--policies", "evict3r"]
    assert _load("cache_step").main(arguments) == 0
    rows = [line.split(" | ")[:3] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[1:] == [["| evict3r", "1", "6"], ["| evict3r", "0.5", "6"], ["| sliding_window", "0.5", "2"]]


WEIGHTS_PY = BENCHMARKS.parent.parent / "shared" / "parity" / "weights.py"  # as test_parity_golden.py
TINY_MODEL = ["--weights-py", str(WEIGHTS_PY), "--preset", "tiny", "--device", "cpu", "--dtype", "float32",
              "--scale-frames", "2", "--window", "3", "--height", "28", "--width", "28"]


def test_policy_fidelity_compares_with_the_sliding_window(capsys, tmp_path):
    if not WEIGHTS_PY.exists():
        pytest.skip("the shared weights filler is not next to the checkout")
    arguments = [*TINY_MODEL, "--reference", str(tmp_path / "sw.pt"), "--frames", "10", "--budgets", "1,0.6",
                 "--camera-iterations", "1", "--same-tokens"]
    assert _load("policy_fidelity").main(arguments) == 0
    assert (tmp_path / "sw.pt").exists()
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "budget" not in line]
    # (2 scale + 3 window frames) at 0.6 of the tokens: the window of 0.6 * 5 - 2 = 1 frame
    assert [row[:3] for row in rows] == [["| evict3r", "1", "3"], ["| evict3r", "0.6", "3"],
                                        ["| infinitevggt", "1", "3"], ["| infinitevggt", "0.6", "3"],
                                        ["| sliding_window", "0.6", "1"]]
    deviations = [(float(row[5]), float(row[6].rstrip(" |"))) for row in rows]
    assert all(0 < rmse < 1 and 0 < abs_rel < 1 for rmse, abs_rel in deviations)  # a fewer-frame window too


def test_layer_budgets_reports_every_layer(capsys):
    if not WEIGHTS_PY.exists():
        pytest.skip("the shared weights filler is not next to the checkout")
    assert _load("layer_budgets").main([*TINY_MODEL, "--frames", "20", "--budget", "0.6"]) == 0
    out = capsys.readouterr().out
    assert out.count("budgets max/min") == 2 and "| 0 |" in out


def test_node_overhead_measures_every_stage(capsys):
    pytest.importorskip("rclpy", reason="the publishing stage needs rclpy")
    assert _load("node_overhead").main(["--frames", "2", "--input", "64x48", "--width", "56"]) == 0
    out = capsys.readouterr().out
    for stage in ("decode Image rgb8", "resize (pil)", "resize (torch)", "FrameResult", "PointCloud2 packing",
                  "fused map", "publish", "total, rgb8 input, model.resize torch"):
        assert stage in out


def test_offline_loop_times_the_gap_between_the_stand_in_steps(capsys):
    pytest.importorskip("rclpy", reason="the offline tool builds ROS messages")
    arguments = ["--frames", "14", "--distinct", "2", "--step-ms", "5", "--runs", "1"]
    assert _load("offline_loop").main(arguments) == 0
    out = capsys.readouterr().out
    assert "14 frames (14 keyframes" in out and "/points: 14 messages" in out
    assert "median over 1 runs: gap between steps" in out and "main-thread cpu" in out
    assert "writer thread: messages" in out


def test_scale_sources_time_every_source_and_recover_the_scale(capsys):
    assert _load("scale_sources").main(["--frames", "2", "--width", "56", "--sensor", "64x48"]) == 0
    out = capsys.readouterr().out
    stages = ("odometry increment", "depth ratio (64x48 sensor)", "camera_height floor fit", "scale_result")
    assert all(stage in out for stage in stages)
    assert "depth: 2.70" in out and "camera_height: 2.7" in out


def test_cache_step_writes_its_rows_as_json(tmp_path, capsys):
    path = tmp_path / "results" / "cache_step.json"
    arguments = ["--frames", "2", "--layers", "1", "--heads", "1", "--patches", "4", "--scale-frames", "1",
                 "--window", "2", "--max-frames", "4", "--threads", "1", "--policies", "sliding_window",
                 "--json", str(path)]
    assert _load("cache_step").main(arguments) == 0
    assert [row["policy"] for row in json.loads(path.read_text())] == ["sliding_window"]


def test_long_stream_reports_each_span_of_each_policy(capsys, tmp_path):
    if not WEIGHTS_PY.exists():
        pytest.skip("the shared weights filler is not next to the checkout")
    long_stream = _load("long_stream")
    assert long_stream.ping_pong(3, 8) == [0, 1, 2, 2, 1, 0, 0, 1]
    assert long_stream.spans("1:3,4:,9:12", 6) == [(1, 3), (4, 6)]
    path = tmp_path / "long_stream.json"
    arguments = [*TINY_MODEL, "--frames", "9", "--distinct", "4", "--spans", "0:3,3:", "--camera-iterations",
                 "1", "--policies", "sliding_window,infinitevggt", "--budget", "0.8", "--json", str(path)]
    assert long_stream.main(arguments) == 0
    rows = [line.split(" | ")[:2] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "median" not in line]
    assert rows == [["| sliding_window", "0-3"], ["| sliding_window", "3-7"], ["| infinitevggt", "0-3"],
                    ["| infinitevggt", "3-7"]]
    results = json.loads(path.read_text())
    assert [row["budget"] for row in results] == [None, None, 0.8, 0.8]
    assert all(row["max_ms"] >= row["median_ms"] > 0 for row in results)
    # the slow steps (over twice the stream's median) are left out of the steady mean, and only of it
    assert all(row["mean_ms"] >= row["steady_mean_ms"] > 0 for row in results)
    assert all(row["slow_steps"] > 0 or row["mean_ms"] == row["steady_mean_ms"] for row in results)


def test_step_kernels_splits_steps_at_their_markers_and_tells_which_kernels_differ():
    step_kernels = _load("step_kernels")
    # two steps, each begun by a marker; a kernel overlapping another counts once in the busy time; what
    # ran before the first marker is no step's
    first = [(0.0, 10.0, "attention"), (10.5, 12.0, "append"), (11.0, 11.5, "side"), (12.5, 20.0, "rank")]
    second = [(30.0 + start, 30.0 + end, name) for start, end, name in first]
    markers = [(-1.0, -0.5, "void spin_kernel(long)"), (29.0, 29.5, "void spin_kernel(long)")]
    steps = step_kernels.split_steps(second + markers + first + [(-5.0, -4.0, "copy")])
    assert steps == [first, second]
    assert step_kernels.busy_us(first) == pytest.approx(10.0 + 1.5 + 7.5)
    assert step_kernels.step_summary(steps) == pytest.approx(
        {"span_us": 20.0, "busy_us": 19.0, "idle_us": 1.0, "kernels": 4})
    table = step_kernels.kernel_table(steps)
    assert table["rank"] == pytest.approx((7.5, 1.0)) and table["attention"] == pytest.approx((10.0, 1.0))
    baseline = step_kernels.kernel_table([[(0.0, 9.0, "attention"), (9.0, 10.0, "copy")]])
    rows = step_kernels.difference(table, baseline)
    assert [(row["kernel"], row["delta_us"]) for row in rows] == [
        ("rank", 7.5), ("append", 1.5), ("attention", 1.0), ("copy", -1.0), ("side", 0.5)]
    assert step_kernels.split_steps([]) == step_kernels.split_steps(first) == []


@pytest.mark.parametrize("half_heads", [False, True])
def test_streamed_models_run_their_heads_as_asked(half_heads, monkeypatch):
    """``--half-heads`` (the node's defaults on CUDA) reaches the model that ``Streamer`` builds."""
    long_stream = _load("long_stream")  # its helpers, as it imports them
    ours_driver = long_stream.ours_driver
    parser = long_stream.benchmark_parser(None)
    long_stream.add_model_arguments(parser)
    ours_driver.add_streamer_arguments(parser)
    args = parser.parse_args(["--weights-py", "unused.py", *(["--half-heads"] if half_heads else [])])
    built = {}

    class BuiltError(Exception):  # stops the stream once the model's options are known
        pass

    def build_ours(*_args, **options):
        built.update(options)
        raise BuiltError

    monkeypatch.setattr(ours_driver, "build_ours", build_ours)
    with pytest.raises(BuiltError):
        ours_driver.Streamer(args).stream("sliding_window", None, torch.zeros(1), [])
    assert built["half_depth_head"] is built["half_camera_head"] is half_heads


@pytest.mark.parametrize(("policy", "evict_every"), [("infinitevggt", 3), ("evict3r", 1)])
def test_streamed_caches_evict_as_asked(policy, evict_every, monkeypatch):
    """``--evict-every`` reaches the budgeted cache that ``Streamer`` builds for each run."""
    from gct_stream_ros.model.config import GCTConfig  # noqa: PLC0415

    long_stream = _load("long_stream")
    ours_driver = long_stream.ours_driver
    parser = long_stream.benchmark_parser(None)
    long_stream.add_model_arguments(parser)
    ours_driver.add_streamer_arguments(parser)
    given = ["--evict-every", str(evict_every)] if evict_every > 1 else []
    args = parser.parse_args(["--weights-py", "unused.py", "--device", "cpu", *given])

    class BuiltError(Exception):  # stops the stream once the cache is built
        pass

    class Model:
        config = GCTConfig.preset("tiny")

        def use_cache(self, cache):
            self.cache = cache
            raise BuiltError

    model = Model()
    monkeypatch.setattr(ours_driver, "build_ours", lambda *_args, **_options: model)
    with pytest.raises(BuiltError):
        ours_driver.Streamer(args).stream(policy, 0.5, torch.zeros(1), [])
    assert model.cache.evict_every == evict_every and model.cache.budget == 0.5


def test_step_kernels_needs_a_gpu(capsys):
    with pytest.raises(SystemExit, match="needs --device cuda"):
        _load("step_kernels").main(["--weights-py", "unused.py", "--device", "cpu"])


@pytest.mark.parametrize("name", ["policy_fidelity", "layer_budgets", "gpu_parity", "long_stream",
                                  "step_kernels"])
def test_the_model_benchmarks_take_the_shared_model_arguments(name, capsys):
    with pytest.raises(SystemExit) as done:
        _load(name).main(["--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    for option in ("--weights-py", "--seed", "--preset", "--scale-frames", "--window", "--camera-iterations",
                   "--height", "--width", "--device", "--json"):
        assert option in usage


def test_photo_sequence_pans_a_camera_inside_the_recorded_frames(tmp_path):
    photos = _load("photo_sequence")
    recorded_hw = (576, 768)
    for index in range(photos.VIDEO_FRAMES):  # the whole path stays inside the recorded frame
        photos.check_inside(photos.output_to_recorded(index, recorded_hw), recorded_hw, index)
    rng = np.random.default_rng(0)
    texture = cv2.resize(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8), (768, 576),
                         interpolation=cv2.INTER_CUBIC)
    video = tmp_path / "recorded.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (768, 576))
    for _ in range(3):
        writer.write(texture)
    writer.release()
    assert photos.render(video, tmp_path / "photos", 3) == 3
    files = sorted((tmp_path / "photos").glob("*.jpg"))
    assert [f.name for f in files] == ["000000.jpg", "000001.jpg", "000002.jpg"]
    first, second = (cv2.imread(str(f)).astype(np.float32) for f in files[:2])
    assert first.shape == (480, 640, 3)
    # frame 0 looks straight ahead: the centre of the recorded frame; frame 1 has turned
    centre = texture[48:528, 64:704].astype(np.float32)
    assert np.abs(first - centre).mean() < 6.0 < np.abs(second - centre).mean()


def test_filler_checkpoint_loads_strictly_into_the_model(tmp_path):
    weights = tmp_path / "weights.py"  # a stand-in filler with the shared one's interface
    weights.write_text("import torch\n\ndef deterministic_tensor(seed, key, shape):\n"
                       "    g = torch.Generator().manual_seed(seed + len(key))\n"
                       "    return torch.randn(tuple(shape), generator=g, dtype=torch.float64) * 0.02\n")
    checkpoint = tmp_path / "filler.safetensors"
    filler = _load("filler_checkpoint")
    assert filler.main([str(checkpoint), "--weights-py", str(weights), "--preset", "tiny"]) == 0
    from gct_stream_ros.model.checkpoint import build_model
    from gct_stream_ros.model.config import GCTConfig

    model = build_model(GCTConfig.preset("tiny"), str(checkpoint))
    key, value = next((k, v) for k, v in model.state_dict().items() if v.is_floating_point() and v.dim() == 2)
    generator = torch.Generator().manual_seed(filler.DEFAULT_SEED + len(key))
    expected = torch.randn(tuple(value.shape), generator=generator, dtype=torch.float64) * 0.02
    torch.testing.assert_close(value, expected.float())


def test_the_offline_wheels_hold_every_ros_distribution_the_offline_tool_imports():
    """The GPU machine has no registry: a ROS module the offline run imports (the message type support's
    ``rosidl_generator_py`` went missing once) must come from a wheel of ``offline_wheels.txt``."""
    pytest.importorskip("rclpy")
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from importlib.metadata import packages_distributions  # noqa: PLC0415

    # a fresh interpreter: this one holds what every test module imported
    probe = ("import sys\n"
             "import gct_stream_ros.tools.offline\n"
             "from gct_stream_ros.ros.frame_messages import load_message_type_support\n"
             "load_message_type_support()\n"
             "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))\n")
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                              cwd=BENCHMARKS.parent).stdout.split()
    listed = {line.split("==")[0].strip().lower().replace("_", "-")
              for line in (BENCHMARKS / "offline_wheels.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    distributions = packages_distributions()
    needed = {distribution.lower().replace("_", "-") for module in imported
              for distribution in distributions.get(module, ()) if distribution.lower().startswith("ros-")}
    # rosidl_generator_py imports the code generator's modules when it can, for generating only
    optional = {"ros-rosidl-pycommon"}
    assert needed and not needed - listed - optional, sorted(needed - listed - optional)


def test_a_compile_level_names_the_precision_of_each_head():
    driver = _load("ours_driver")
    assert driver.split_level("compiled+graphs+fp16head+fp16camera") == ("compiled+graphs", True, True)
    assert driver.split_level("compiled+fp16head") == ("compiled", True, False)
    assert driver.split_level("graphs+fp16camera") == ("graphs", False, True)
    assert driver.split_level("none") == ("none", False, False)
