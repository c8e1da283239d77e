"""Numerical parity of ``GCTModel`` with the reference on a golden fixture.

    gct_stream_parity FIXTURE.safetensors [--scenarios NAME ...] [--weights-module PATH/weights.py]

The weights module (``fill_deterministic``, ``fingerprint``) ships with the fixtures; by default
it is the ``weights.py`` next to the fixture.

The fixture's ``.json`` (next to it) gives everything: constructor kwargs, weight seed and
fingerprint, scenarios (method, call kwargs, input frames, outputs) and tolerances. The model
is built from the kwargs, filled with the shared ``fill_deterministic`` (never copied here),
every scenario runs, and every stored output is compared (``|ours - golden| <= atol + rtol *
|golden|``, uint8 exactly). One line per output, ``UNSUPPORTED`` for a scenario without a
runner (it counts as a failure), then ``N passed, N failed``; exit status 1 on any failure.

Runners are looked up in ``RUNNERS`` by ``runner_key(scenario)``: the reference method, plus
``+flow`` when the call uses flow keyframes. A runner receives the model, the input frames
``[S, 3, H, W]`` and the call kwargs and returns the outputs in the fixture's layout
(``fixture_layout`` converts per-step ``StepOutput``s).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from safetensors.torch import load_file

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.gct import GCTModel
from gct_stream_ros.model.network import StepOutput
from gct_stream_ros.tools.parity_engine import run_flow_streaming, run_windowed

WEIGHTS_MODULE = "weights.py"
"""The fixtures' weights module, next to them unless ``--weights-module`` says otherwise."""
FRAME_TYPE_SCALE, FRAME_TYPE_KEYFRAME, FRAME_TYPE_NON_KEYFRAME = 0, 1, 2

Runner = Callable[[GCTModel, torch.Tensor, dict[str, Any]], dict[str, torch.Tensor]]


@dataclass
class Fixture:
    path: Path
    doc: dict[str, Any]
    """The fixture's JSON."""
    tensors: dict[str, torch.Tensor]

    @classmethod
    def load(cls, path: str | Path) -> Fixture:
        path = Path(path)
        return cls(path, json.loads(path.with_suffix(".json").read_text()), load_file(str(path)))

    @property
    def scenarios(self) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in self.doc["scenarios"]}

    def images(self, scenario: dict[str, Any]) -> torch.Tensor:
        """The scenario's input frames ``[S, 3, H, W]``."""
        first, last = scenario["input"]["frames"]
        return self.tensors[scenario["input"]["tensor"]][0, first:last]


@dataclass
class Comparison:
    scenario: str
    output: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{self.scenario:20s} {self.output:20s} {'PASS' if self.passed else 'FAIL'}  {self.detail}"


class ParityError(RuntimeError):
    """The fixture cannot be reproduced at all (weights or state-dict layout differ)."""


def load_weights_module(path: str | Path) -> ModuleType:
    """Import the fixtures' ``weights.py`` (``fill_deterministic``, ``fingerprint``) from its file."""
    path = Path(path)
    if not path.is_file():
        raise ParityError(f"weights module not found: {path} (pass --weights-module)")
    spec = importlib.util.spec_from_file_location("parity_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_parity_model(fixture: Fixture, weights: ModuleType) -> GCTModel:
    """The fixture's architecture with its deterministic weights, fp32, CPU, eval mode."""
    spec = fixture.doc["weights"]
    fingerprint = weights.fingerprint(spec["seed"], spec["fingerprint_keys"])
    if fingerprint != spec["fingerprint"]:
        raise ParityError(f"weights.py gives fingerprint {fingerprint}, "
                          f"the fixture expects {spec['fingerprint']}")
    config = GCTConfig.from_reference_kwargs(fixture.doc["model"]["constructor_kwargs"])
    with torch.device("meta"):
        model = GCTModel(config)
    expected = {key: list(shape) for key, shape, *_ in fixture.doc["model"]["state_dict"]}
    ours = {key: list(value.shape) for key, value in model.state_dict().items()}
    if ours != expected:
        missing, unexpected = sorted(expected.keys() - ours.keys()), sorted(ours.keys() - expected.keys())
        reshaped = sorted(k for k in expected.keys() & ours.keys() if expected[k] != ours[k])
        raise ParityError(f"state dict differs: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                          f"shapes {reshaped[:5]}")
    model.materialize("cpu")
    weights.fill_deterministic(model, spec["seed"])
    return model.eval()


def fixture_layout(steps: list[StepOutput], frame_types: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Per-step outputs -> the fixture's tensors (batch 1): ``pose_enc [1,S,9]``, ``depth [1,S,H,W,1]``."""
    def cat(name: str) -> torch.Tensor | None:
        parts = [getattr(step, name) for step in steps]
        return None if any(p is None for p in parts) else torch.cat(parts)

    outputs = {"pose_enc": cat("pose_enc")[None], "depth": cat("depth")[None, ..., None],
               "depth_conf": cat("depth_conf")[None]}
    for name in ("world_points", "world_points_conf"):
        value = cat(name)
        if value is not None:
            outputs[name] = value[None]
    pose_enc_list = [step.pose_enc_list for step in steps]
    if all(p is not None for p in pose_enc_list):
        outputs["pose_enc_list"] = torch.cat(pose_enc_list, dim=1)[:, None]  # [iterations, 1, S, 9]
    if frame_types is not None:
        outputs["frame_type"] = torch.tensor([frame_types], dtype=torch.uint8)
    return outputs


def run_interval_streaming(model: GCTModel, images: torch.Tensor,
                           kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Phase 1 on the scale frames, then one frame per step; every k-th streaming frame is stored."""
    num_scale = min(kwargs.get("num_scale_frames") or model.config.scale_frames, len(images))
    interval = kwargs.get("keyframe_interval", 1)
    model.reset()
    steps = [model.step(images[:num_scale], StepMode.STORE, num_scale_frames=num_scale)]
    frame_types = [FRAME_TYPE_SCALE] * num_scale
    for index in range(num_scale, len(images)):
        keyframe = interval <= 1 or (index - num_scale) % interval == 0
        mode = StepMode.STORE if keyframe else StepMode.SKIP
        steps.append(model.step(images[index:index + 1], mode, num_scale_frames=num_scale))
        frame_types.append(FRAME_TYPE_KEYFRAME if keyframe else FRAME_TYPE_NON_KEYFRAME)
    return fixture_layout(steps, frame_types)


def run_scale_phase(model: GCTModel, images: torch.Tensor,
                    kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """One forward of all given frames as a phase-1 block on fresh caches."""
    if kwargs.get("num_frame_per_block", len(images)) != len(images):
        raise NotImplementedError("only a single block of all frames is supported")
    model.reset()
    num_scale = kwargs.get("num_frame_for_scale") or model.config.scale_frames
    return fixture_layout([model.step(images, StepMode.STORE, num_scale_frames=num_scale)])


RUNNERS: dict[str, Runner] = {
    "inference_streaming": run_interval_streaming,
    "forward": run_scale_phase,
    "inference_streaming+flow": run_flow_streaming,
    "inference_windowed": run_windowed,
    "inference_windowed+flow": run_windowed,
}


def runner_key(scenario: dict[str, Any]) -> str:
    flow = scenario["call_kwargs"].get("flow_threshold")
    return scenario["method"] + ("+flow" if flow else "")


def compare_outputs(fixture: Fixture, scenario: dict[str, Any],
                    outputs: dict[str, torch.Tensor]) -> list[Comparison]:
    """One ``Comparison`` per output the fixture stores for ``scenario``."""
    tolerances = fixture.doc["tolerances"]["recommended"]
    results = []
    for name, spec in scenario["outputs"].items():
        golden = fixture.tensors[spec["tensor"]]
        ours = outputs.get(name)
        if ours is None:
            results.append(Comparison(scenario["name"], name, False, "not produced"))
        else:
            passed, detail = compare_tensor(ours.detach().cpu(), golden, tolerances.get(name, "exact"))
            results.append(Comparison(scenario["name"], name, passed, detail))
    return results


def compare_tensor(ours: torch.Tensor, golden: torch.Tensor,
                   tolerance: dict[str, float] | str) -> tuple[bool, str]:
    """allclose semantics with an equal finite pattern; integer tensors or ``"exact"`` compare exactly."""
    if tuple(ours.shape) != tuple(golden.shape):
        return False, f"shape {tuple(ours.shape)} != golden {tuple(golden.shape)}"
    if tolerance == "exact" or not golden.is_floating_point():
        equal = torch.equal(ours.to(golden.dtype), golden)
        return equal, "exact" if equal else "values differ (exact comparison)"
    ours, golden = ours.double(), golden.double()
    finite = torch.isfinite(golden)
    if not torch.equal(torch.isfinite(ours), finite):
        return False, "finite pattern differs"
    error = (ours[finite] - golden[finite]).abs()
    if error.numel() == 0:
        return True, "no finite values"
    allowed = tolerance["atol"] + tolerance["rtol"] * golden[finite].abs()
    relative = error / golden[finite].abs().clamp_min(torch.finfo(torch.float32).tiny)
    detail = (f"max_abs={float(error.max()):.3e} max_rel={float(relative.max()):.3e} "
              f"worst_err/allowed={float((error / allowed).max()):.4f}")
    return bool((error <= allowed).all()), detail


def run_scenario(model: GCTModel, fixture: Fixture, name: str) -> list[Comparison]:
    """Run one scenario and compare its outputs; a scenario without a runner is one failure."""
    scenario = fixture.scenarios[name]
    key = runner_key(scenario)
    try:
        if key not in RUNNERS:
            raise NotImplementedError(f"no runner for {key!r}")
        outputs = RUNNERS[key](model, fixture.images(scenario), scenario["call_kwargs"])
    except NotImplementedError as error:
        return [Comparison(name, "-", False, f"UNSUPPORTED ({error})")]
    return compare_outputs(fixture, scenario, outputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gct_stream_parity",
                                     description="Compare GCTModel with a golden fixture of the reference.")
    parser.add_argument("fixture", help="FIXTURE.safetensors (its .json must sit next to it)")
    parser.add_argument("--scenarios", nargs="*", help="scenario names (default: all in the fixture)")
    parser.add_argument("--weights-module", type=Path,
                        help=f"the fixtures' weights module (default: {WEIGHTS_MODULE} next to FIXTURE)")
    args = parser.parse_args(argv)
    fixture = Fixture.load(args.fixture)
    weights_module = args.weights_module or fixture.path.parent / WEIGHTS_MODULE
    names = args.scenarios or list(fixture.scenarios)
    unknown = [name for name in names if name not in fixture.scenarios]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; the fixture has {list(fixture.scenarios)}")
    try:
        model = build_parity_model(fixture, load_weights_module(weights_module))
    except ParityError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    results = []
    for name in names:
        comparisons = run_scenario(model, fixture, name)
        print("\n".join(c.line() for c in comparisons), flush=True)
        results += comparisons
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
