"""Checkpoint loading: the accepted layouts, strict errors that name the keys, the hub path."""

from __future__ import annotations

import huggingface_hub
import pytest
import torch
from safetensors.torch import save_file

from gct_stream_ros.model.checkpoint import CheckpointError, build_model
from gct_stream_ros.tools import convert_checkpoint


@pytest.fixture
def saved(tiny_model, tmp_path):
    """(reference model, ``write(layout, edit=None) -> path``) with the model's weights on disk."""
    reference = tiny_model()

    def write(layout: str, edit=None) -> str:
        state = {k: v.clone() for k, v in reference.state_dict().items()}
        if edit:
            edit(state)
        if layout == "safetensors":
            path = tmp_path / "weights.safetensors"
            save_file(state, str(path))
        else:
            path = tmp_path / "weights.pt"
            torch.save({"model": state, "epoch": 3} if layout == "wrapped" else state, path)
        return str(path)

    return reference, write


@pytest.mark.parametrize("layout", ["wrapped", "bare", "safetensors"])
def test_every_layout_loads_the_exact_weights(saved, layout):
    reference, write = saved
    model = build_model(reference.config, write(layout), "cpu", torch.float32)
    assert not model.training
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert torch.equal(model.aggregator._resnet_std, reference.aggregator._resnet_std)


def test_point_head_weights_are_ignored_when_the_head_is_not_built(saved):
    reference, write = saved
    path = write("bare", lambda state: state.update({"point_head.norm.weight": torch.ones(3)}))
    assert build_model(reference.config, path, "cpu", torch.float32).point_head is None


@pytest.mark.parametrize(("edit", "named"), [
    (lambda s: s.pop("camera_head.embed_pose.bias"), "missing keys (1): camera_head.embed_pose.bias"),
    (lambda s: s.update({"aggregator.extra": torch.ones(1)}), "unexpected keys (1): aggregator.extra"),
    (lambda s: s.update({"depth_head.norm.bias": torch.ones(3)}), "depth_head.norm.bias (3,) != (256,)"),
])
def test_a_wrong_file_names_the_offending_keys(saved, edit, named):
    reference, write = saved
    with pytest.raises(CheckpointError) as error:
        build_model(reference.config, write("bare", edit), "cpu", torch.float32)
    assert named in str(error.value)


def test_unreadable_and_missing_files_raise_checkpoint_errors(tmp_path, tiny_model):
    config = tiny_model().config
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    for path in (str(garbage), str(tmp_path / "absent.pt")):
        with pytest.raises(CheckpointError):
            build_model(config, path, "cpu", torch.float32)


def test_hub_download_failure_is_one_clear_error(monkeypatch, tiny_model):
    def offline(**kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(CheckpointError, match="lingbot-map-long.pt from huggingface.co/robbyant/lingbot-map"):
        build_model(tiny_model().config, "hf:lingbot-map-long", "cpu", torch.float32)


def test_no_checkpoint_gives_random_weights_in_the_requested_precision(tiny_model):
    model = build_model(tiny_model().config, None, "cpu", torch.bfloat16)
    assert model.aggregator.camera_token.dtype == torch.bfloat16
    assert model.camera_head.embed_pose.weight.dtype == torch.float32


class _TrainingArguments:
    """Stands for the argparse namespace the reference pickles next to its weights."""


def test_a_pt_file_that_needs_unpickling_is_refused_with_the_conversion_command(saved, tmp_path):
    reference, _ = saved
    path = tmp_path / "reference.pt"
    torch.save({"model": reference.state_dict(), "args": _TrainingArguments()}, path)
    with pytest.raises(CheckpointError, match=r"gct_stream_convert .*reference\.pt .*reference\.safetensors"):
        build_model(reference.config, str(path), "cpu", torch.float32)


def test_converting_a_trusted_pt_file_gives_a_safetensors_file_that_loads(saved, tmp_path, capsys):
    reference, _ = saved
    source, target = tmp_path / "reference.pt", tmp_path / "converted.safetensors"
    torch.save({"model": reference.state_dict(), "args": _TrainingArguments()}, source)
    assert convert_checkpoint.main([str(source), str(target), "--preset", "tiny"]) == 0
    assert "wrote" in capsys.readouterr().out
    model = build_model(reference.config, str(target), "cpu", torch.float32)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_checkpoint_of_another_architecture_is_not_converted(saved, tmp_path, capsys):
    reference, write = saved
    target = tmp_path / "converted.safetensors"
    assert convert_checkpoint.main([write("wrapped"), str(target)]) == 1
    assert "does not fit the model" in capsys.readouterr().err
    assert not target.exists()


def test_a_corrupt_safetensors_file_is_a_checkpoint_error(tmp_path, tiny_model):
    corrupt = tmp_path / "weights.safetensors"
    corrupt.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        build_model(tiny_model().config, str(corrupt), "cpu", torch.float32)
