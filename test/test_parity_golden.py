"""Parity with the reference on the shipped golden fixture (ViT-L, ~5.5 GB RAM, ~2 minutes).

The model is built and filled once per session; every scenario with a runner must pass at the
fixture's tolerances. Sensitivity checks prove that the comparison can fail.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from gct_stream_ros.tools import parity

SHARED_PARITY = Path(__file__).resolve().parents[1].parent / "shared" / "parity"
FIXTURE = SHARED_PARITY / "golden_small.safetensors"
pytestmark = pytest.mark.skipif(not FIXTURE.is_file(), reason=f"golden fixture not found at {FIXTURE}")


@pytest.fixture(scope="session")
def fixture() -> parity.Fixture:
    return parity.Fixture.load(FIXTURE)


@pytest.fixture(scope="session")
def model(fixture):
    return parity.build_parity_model(fixture, parity.load_weights_module(SHARED_PARITY / "weights.py"))


@pytest.mark.golden
@pytest.mark.parametrize("name", ["e_scale_phase", "a_stream_k1", "b_stream_k2", "c_flow_keyframes",
                                  "d_windowed"])
def test_scenario_matches_the_reference(model, fixture, name):
    comparisons = parity.run_scenario(model, fixture, name)
    assert comparisons and all(c.passed for c in comparisons), "\n".join(c.line() for c in comparisons)


@pytest.mark.golden
def test_a_wrong_scale_token_variant_fails_the_comparison(model, fixture):
    scenario = fixture.scenarios["e_scale_phase"]
    kwargs = {**scenario["call_kwargs"], "num_frame_for_scale": 1}
    outputs = parity.run_scale_phase(model, fixture.images(scenario), kwargs)
    failed = {c.output for c in parity.compare_outputs(fixture, scenario, outputs) if not c.passed}
    assert {"pose_enc", "depth"} <= failed


def test_a_perturbed_output_fails_and_an_exact_copy_passes(fixture):
    scenario = fixture.scenarios["a_stream_k1"]
    golden = {name: fixture.tensors[spec["tensor"]].clone() for name, spec in scenario["outputs"].items()}
    assert all(c.passed for c in parity.compare_outputs(fixture, scenario, golden))
    golden["pose_enc"][0, 5, 0] += 1e-3
    golden["frame_type"][0, 3] = 2
    del golden["depth"]
    verdicts = {c.output: c.passed for c in parity.compare_outputs(fixture, scenario, golden)}
    assert not verdicts["pose_enc"] and not verdicts["frame_type"] and not verdicts["depth"]
    assert verdicts["depth_conf"]


def test_a_tensor_with_a_different_finite_pattern_fails():
    tolerance = {"atol": 1e-4, "rtol": 1e-4}
    golden = torch.tensor([1.0, float("nan")])
    assert parity.compare_tensor(golden.clone(), golden, tolerance)[0]
    assert not parity.compare_tensor(torch.tensor([1.0, 2.0]), golden, tolerance)[0]


def test_scenarios_without_a_runner_count_as_failures(fixture, monkeypatch):
    monkeypatch.setattr(parity, "RUNNERS", {})
    [comparison] = parity.run_scenario(None, fixture, "a_stream_k1")
    assert not comparison.passed and "UNSUPPORTED" in comparison.detail


def test_flow_keyframes_need_their_own_runner(fixture):
    assert parity.runner_key(fixture.scenarios["c_flow_keyframes"]) == "inference_streaming+flow"
    assert parity.runner_key(fixture.scenarios["a_stream_k1"]) == "inference_streaming"


def test_weights_that_differ_from_the_fixture_are_refused(fixture):
    wrong = types.SimpleNamespace(fingerprint=lambda seed, keys: "0000000000000000")
    with pytest.raises(parity.ParityError, match="fingerprint"):
        parity.build_parity_model(fixture, wrong)
