"""GCTModel (tiny preset): step outputs and the STORE / SKIP / DEFER semantics across both caches."""

from __future__ import annotations

import pytest
import torch

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.gct import GCTModel
from gct_stream_ros.model.pose_encoding import decode_pose_encoding


def _equal_outputs(a, b) -> bool:
    names = ("pose_enc", "depth", "depth_conf")
    return all(torch.equal(getattr(a, name), getattr(b, name)) for name in names)


def test_step_outputs_have_the_contract_shapes(tiny_model, frames):
    model = tiny_model(enable_point=True)
    images = frames(3)
    first = model.step(images[:2])
    second = model.step(images[2:])
    assert first.pose_enc.shape == (2, 9) and second.pose_enc.shape == (1, 9)
    assert first.depth.shape == first.depth_conf.shape == (2, 42, 56)
    assert first.pose_enc_list.shape == (model.config.camera_iterations, 2, 9)
    assert torch.equal(first.pose_enc_list[-1], first.pose_enc)
    assert first.world_points.shape == (2, 42, 56, 3) and first.world_points_conf.shape == (2, 42, 56)
    assert (first.depth > 0).all() and (first.depth_conf > 1).all()
    assert model.frames_stored == 3 and model.cache_stats().frames_stored == 3
    assert model.cache_stats().camera_head_bytes == model.camera_cache.nbytes > 0


@pytest.mark.parametrize("seed", range(5))
def test_untrained_weights_give_finite_intrinsics(frames, seed):
    """The tiny demo and the flow keyframes divide by the focal length: it must stay finite."""
    torch.manual_seed(seed)
    model = GCTModel(GCTConfig.preset("tiny")).eval()
    pose_enc = torch.cat([model.step(frames(2)).pose_enc, model.step(frames(1)).pose_enc])
    _, intrinsics = decode_pose_encoding(pose_enc, (42, 56))
    focal = intrinsics[:, [0, 1], [0, 1]]
    assert torch.isfinite(focal).all() and (focal > 0).all(), focal


def test_official_layout_has_no_point_head(tiny_model, frames):
    output = tiny_model().step(frames(2))
    assert output.world_points is None and output.world_points_conf is None


def test_skip_equals_store_of_the_same_frame_and_leaves_no_trace(tiny_model, frames):
    images = frames(4)
    skipping, storing, plain = tiny_model(), tiny_model(), tiny_model()
    for model in (skipping, storing, plain):
        model.step(images[:2])
    # same visible keys and same temporal index (the frame count before the step)
    assert _equal_outputs(skipping.step(images[2:3], StepMode.SKIP), storing.step(images[2:3]))
    assert skipping.frames_stored == 2 and storing.frames_stored == 3
    # the next keyframe gets the index the non-keyframe had: as if it never existed
    assert _equal_outputs(skipping.step(images[3:4]), plain.step(images[3:4]))


def test_defer_then_rollback_leaves_no_trace_in_any_cache(tiny_model, frames):
    images = frames(5)
    deferred, plain = tiny_model(), tiny_model()
    for model in (deferred, plain):
        model.step(images[:2])
        model.step(images[2:3])
    deferred.step(images[3:4], StepMode.DEFER)
    deferred.rollback()
    assert deferred.frames_stored == plain.frames_stored == 3
    assert _equal_outputs(deferred.step(images[4:5]), plain.step(images[4:5]))


def test_defer_then_commit_equals_store_when_nothing_is_evicted(tiny_model, frames):
    images = frames(4)
    deferred, stored = tiny_model(sliding_window=8), tiny_model(sliding_window=8)
    for model in (deferred, stored):
        model.step(images[:2])
    assert _equal_outputs(deferred.step(images[2:3], StepMode.DEFER), stored.step(images[2:3]))
    deferred.commit()
    assert _equal_outputs(deferred.step(images[3:4]), stored.step(images[3:4]))


def test_eviction_changes_what_a_frame_sees(tiny_model, frames):
    images = frames(5)
    small, large = tiny_model(sliding_window=1), tiny_model(sliding_window=8)
    outputs = [[model.step(images[:2])] + [model.step(images[i:i + 1]) for i in range(2, 5)]
               for model in (small, large)]
    assert _equal_outputs(outputs[0][1], outputs[1][1])  # window of 1 still holds frame 2 itself
    assert not torch.equal(outputs[0][-1].pose_enc, outputs[1][-1].pose_enc)


def test_reset_starts_a_new_sequence(tiny_model, frames):
    images = frames(3)
    model, fresh = tiny_model(), tiny_model()
    model.step(images[:2])
    model.step(images[2:])
    model.reset()
    assert model.frames_stored == 0
    assert _equal_outputs(model.step(images[1:3]), fresh.step(images[1:3]))


def test_image_size_change_needs_a_reset(tiny_model, frames):
    model = tiny_model()
    model.step(frames(2))
    with pytest.raises(ValueError, match="reset"):
        model.step(frames(1, height=56))


def test_special_token_variants_follow_the_sequence_position(tiny_model):
    aggregator = tiny_model().aggregator
    tokens = aggregator.special_tokens(first_position=0, num_frames=4, num_scale_frames=3)  # [S, 6, C]
    camera, registers = aggregator.camera_token[0], aggregator.register_token[0]
    scale = aggregator.scale_token[0]
    assert not torch.equal(camera[0], camera[1]) and not torch.equal(scale[0], scale[1])
    for frame, (anchor, scale_variant) in enumerate([(0, 0), (1, 0), (1, 0), (1, 1)]):
        assert torch.equal(tokens[frame, :1], camera[anchor])
        assert torch.equal(tokens[frame, 1:5], registers[anchor])
        assert torch.equal(tokens[frame, 5:], scale[scale_variant])
    streaming = aggregator.special_tokens(first_position=3, num_frames=1, num_scale_frames=3)
    assert torch.equal(streaming[0, 5:], scale[1]) and torch.equal(streaming[0, :1], camera[1])


def test_bfloat16_aggregator_keeps_fp32_outputs_close_to_fp32(tiny_model, frames):
    images = frames(2)
    reference = tiny_model().step(images)
    output = tiny_model().to_inference_dtype(torch.bfloat16).step(images)
    assert output.pose_enc.dtype == output.depth.dtype == torch.float32
    torch.testing.assert_close(output.depth, reference.depth, atol=0.05, rtol=0.05)
    assert not torch.equal(output.depth, reference.depth)


def test_half_depth_head_runs_the_dpt_heads_in_the_inference_dtype_only(tiny_model, frames):
    images = frames(2)
    full = tiny_model(enable_point=True).to_inference_dtype(torch.bfloat16).step(images)
    half = tiny_model(enable_point=True).to_inference_dtype(torch.bfloat16, half_depth_head=True).step(images)
    assert half.depth.dtype == half.world_points.dtype == torch.float32
    assert torch.equal(half.pose_enc, full.pose_enc)  # the camera head stays fp32
    torch.testing.assert_close(half.depth, full.depth, atol=0.05, rtol=0.05)
    assert not torch.equal(half.depth, full.depth) and not torch.equal(half.world_points, full.world_points)
    assert not tiny_model().to_inference_dtype(torch.float32, half_depth_head=True).half_depth_head


def test_half_camera_head_keeps_only_the_trunk_linear_layers_in_fp16(tiny_model, frames):
    images = frames(3)
    full = tiny_model()
    full.to_inference_dtype(torch.bfloat16)
    half = tiny_model()
    half.to_inference_dtype(torch.bfloat16, half_camera_head=True)
    linear = {f"trunk.{name}" for name, module in half.camera_head.trunk.named_modules()
              if isinstance(module, torch.nn.Linear)}
    for name, parameter in half.camera_head.named_parameters():
        in_trunk_linear = name.rsplit(".", 1)[0] in linear
        assert parameter.dtype == (torch.float16 if in_trunk_linear else torch.float32), name
    assert list(half.state_dict()) == list(full.state_dict())
    for step in (images[:2], images[2:]):  # the scale phase, then a frame through the camera cache
        ours, reference = half.step(step), full.step(step)
        assert ours.pose_enc.dtype == torch.float32
        assert torch.equal(ours.depth, reference.depth)  # the depth path does not read the camera head
        torch.testing.assert_close(ours.pose_enc_list, reference.pose_enc_list, atol=1e-5, rtol=1e-5)
        assert not torch.equal(ours.pose_enc, reference.pose_enc)
    assert {buffer.dtype for buffer in half.camera_cache._buffers[0][0]} == {torch.float32}
    fp32 = tiny_model()
    fp32.to_inference_dtype(torch.float32, half_camera_head=True)
    assert fp32.camera_head.trunk_dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in fp32.camera_head.parameters())


def test_compile_regions_hands_its_options_to_the_global_cache(tiny_model, monkeypatch):
    model = tiny_model()
    calls = []
    monkeypatch.setattr(model.cache, "compile_regions", lambda **options: calls.append(options))
    model.compile_regions(backend="eager")
    assert calls == [{"mode": None, "backend": "eager", "dynamic": False}]


def test_use_cache_starts_a_sequence_on_a_cache_compiled_like_the_regions(tiny_model, frames, monkeypatch):
    images = frames(3)
    model = tiny_model().compile_regions(backend="eager")
    model.step(images[:2])
    cache = tiny_model().cache
    calls = []
    monkeypatch.setattr(cache, "compile_regions", lambda **options: calls.append(options))
    assert model.use_cache(cache) is model and model.cache is cache and model.frames_stored == 0
    assert calls == [{"mode": None, "backend": "eager", "dynamic": False}]
    fresh = tiny_model()
    for step in (images[:2], images[2:]):
        assert _equal_outputs(model.step(step), fresh.step(step))
    assert model.camera_cache.frames_stored == 3


def test_compiled_regions_equal_the_eager_model_and_keep_the_state_dict(tiny_model, frames):
    """Dynamo traces every region whole (no graph break); Inductor is left to the GPU benchmarks."""
    eager, compiled = tiny_model(enable_point=True), tiny_model(enable_point=True)
    keys = list(compiled.state_dict())
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled.compile_regions(mode=None, backend="eager")
    images = frames(4)
    outputs = {model: [model.step(images[:2]), model.step(images[2:3]),
                       model.step(images[3:], mode=StepMode.SKIP)] for model in (eager, compiled)}
    for ours, reference in zip(outputs[compiled], outputs[eager]):
        assert _equal_outputs(ours, reference) and torch.equal(ours.world_points, reference.world_points)
    assert not torch._dynamo.utils.counters["graph_break"]
    # patch embedding, depth+1 segments, the camera head's iterations x blocks + 1 stations and two
    # DPT heads, for the scale phase and for single frames
    c = compiled.config
    stations = c.camera_iterations * c.camera_depth + 1
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2 * (1 + c.depth + 1 + stations + 2)
    assert list(compiled.state_dict()) == keys and compiled.compiled
