"""StreamSession with the oracle network: online output, ordering, contents, sequences, stats."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from oracle_network import OracleNetwork
from test_stream_support import WIDTH, oracle_session, push_all, relative_poses, render

from gct_stream_ros.model.preprocess import preprocess_image, resize_image
from gct_stream_ros.stream.config import EngineConfig
from gct_stream_ros.stream.frame_assembly import DeferredResult
from gct_stream_ros.stream.result import FrameType
from gct_stream_ros.stream.session import StreamSession
from gct_stream_ros.stream.synthetic import SyntheticScene


def test_results_come_online_after_the_scale_phase():
    frames = render(7)
    session, _ = oracle_session(frames, num_scale_frames=3)
    per_push = push_all(session, frames)
    assert [len(results) for results in per_push] == [0, 0, 3, 1, 1, 1, 1]
    emitted = [result for results in per_push for result in results]
    assert [r.index for r in emitted] == list(range(7))
    assert [r.stamp_ns for r in emitted] == [f.stamp_ns for f in frames]
    assert [r.frame_type for r in emitted] == [FrameType.SCALE] * 3 + [FrameType.KEYFRAME] * 4
    assert not any(r.revision for r in emitted)


def test_results_carry_the_true_geometry_in_the_first_frame_world():
    frames = render(4)
    session, _ = oracle_session(frames, oracle_raw_quaternions=True)
    results = [r for rs in push_all(session, frames) for r in rs]
    expected = relative_poses(frames)
    for result, frame, pose in zip(results, frames, expected):
        assert result.pose_c2w.dtype == np.float64 and result.pose_c2w.shape == (4, 4)
        np.testing.assert_allclose(result.pose_c2w, pose, atol=1e-5)
        np.testing.assert_allclose(result.pose_c2w[:3, :3] @ result.pose_c2w[:3, :3].T, np.eye(3), atol=1e-6)
        np.testing.assert_allclose(result.intrinsics, frame.intrinsics, rtol=1e-5)
        np.testing.assert_allclose(result.intrinsics_input, frame.intrinsics, rtol=1e-5)
        np.testing.assert_allclose(result.depth, frame.depth, rtol=1e-6)
        assert result.image.dtype == np.uint8 and np.array_equal(result.image, frame.image)
        assert result.pose_enc.shape == (9,) and set(result.timings_ms) == {"preprocess", "step", "result"}
    # Points unprojected from depth and pose land where the true geometry puts them.
    v, u = 20, 33
    truth = np.linalg.inv(frames[3].intrinsics) @ np.array([u, v, 1.0]) * frames[3].depth[v, u]
    truth = expected[3][:3, :3] @ truth + expected[3][:3, 3]
    np.testing.assert_allclose(results[3].world_points[v, u], truth, rtol=1e-4, atol=1e-5)
    assert results[3].world_points.dtype == np.float32


def test_point_head_output_is_used_when_the_network_has_one_and_points_can_be_turned_off():
    frames = render(3)
    session, oracle = oracle_session(frames, oracle_point_head=True)
    results = [r for rs in push_all(session, frames) for r in rs]
    output = oracle.step(torch.stack([preprocess_image(f.image, WIDTH)[0] for f in frames[:1]]))
    np.testing.assert_allclose(results[0].world_points, output.world_points[0].numpy(), atol=1e-6)
    session, _ = oracle_session(frames, compute_points=False)
    assert all(r.world_points is None for rs in push_all(session, frames) for r in rs)


def test_intrinsics_are_mapped_back_to_the_input_image():
    scene = SyntheticScene(2)
    pose = np.eye(4)
    pose[:3, 3] = (0.0, -0.2, -1.0)
    image, _, input_intrinsics = scene.render(pose, 2 * WIDTH, 112)
    _, depth, model_intrinsics = scene.render(pose, WIDTH, 56)
    tensor, geometry = preprocess_image(image, WIDTH)
    oracle = OracleNetwork()
    oracle.register(tensor, depth, pose, model_intrinsics)
    config = EngineConfig(preset="tiny", image_width=WIDTH, num_scale_frames=1, window_overlap=1)
    session = StreamSession(config, oracle)
    (result,) = session.push(image, 5)
    np.testing.assert_allclose(result.intrinsics, model_intrinsics, rtol=1e-5)
    expected = geometry.intrinsics_to_input(result.intrinsics)
    np.testing.assert_allclose(result.intrinsics_input, expected, rtol=1e-9)
    np.testing.assert_allclose(result.intrinsics_input[0, 0], input_intrinsics[0, 0], rtol=2e-2)


@pytest.mark.parametrize(("resize", "dtype", "method"), [
    ("pil", "float32", "pil"), ("torch", "float32", "torch"), ("auto", "float32", "pil"),
    ("auto", "bfloat16", "torch"), ("pil", "bfloat16", "pil")])
def test_the_configured_resize_makes_the_model_input_and_the_result_colours(resize, dtype, method):
    image = np.random.default_rng(3).integers(0, 256, (112, 2 * WIDTH, 3), dtype=np.uint8)
    config = EngineConfig(preset="tiny", checkpoint="", device="cpu", dtype=dtype, image_width=WIDTH,
                          resize=resize, num_scale_frames=1, window_overlap=1)
    session = StreamSession(config)
    (result,) = session.push(image, 5)
    assert session.resize == method
    expected, _ = resize_image(image, WIDTH, method)
    other, _ = resize_image(image, WIDTH, "torch" if method == "pil" else "pil")
    np.testing.assert_array_equal(result.image, expected)
    assert not np.array_equal(result.image, other)


def test_interval_keyframes_store_every_kth_streaming_frame():
    frames = render(9)
    session, oracle = oracle_session(frames, keyframe_mode="interval", keyframe_interval=3)
    results = [r for rs in push_all(session, frames) for r in rs]
    assert oracle.modes() == ["store", "skip", "skip"] * 2 + ["store"]
    assert [r.frame_type for r in results[2:]] == [FrameType.KEYFRAME, FrameType.NON_KEYFRAME,
                                                  FrameType.NON_KEYFRAME] * 2 + [FrameType.KEYFRAME]
    assert oracle.frames_stored == 2 + 3 and session.stats().keyframes == 3


def test_a_size_change_flushes_and_starts_a_new_sequence(caplog):
    first = render(3)
    second = render(3, height=42, seed=1)
    session, oracle = oracle_session(first + second, num_scale_frames=2)
    per_push = push_all(session, first + second)
    assert [len(r) for r in per_push] == [0, 2, 1, 0, 2, 1]
    emitted = [r for rs in per_push for r in rs]
    assert [r.index for r in emitted] == list(range(6))
    assert [r.sequence for r in emitted] == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(emitted[3].pose_c2w, np.eye(4), atol=1e-6)
    assert "input size changed" in caplog.text
    assert session.stats().sequence == 1


def test_pending_scale_frames_are_flushed_at_a_size_change():
    first = render(1)
    second = render(3, height=42, seed=1)
    session, _ = oracle_session(first + second, num_scale_frames=2)
    per_push = push_all(session, first + second)
    assert [len(r) for r in per_push] == [0, 1, 2, 1]
    emitted = [r for rs in per_push for r in rs]
    assert [(r.index, r.sequence, r.frame_type) for r in emitted[:2]] == [(0, 0, FrameType.SCALE),
                                                                          (1, 1, FrameType.SCALE)]


def test_flush_runs_a_short_scale_phase_and_reset_drops_pending_frames():
    frames = render(4)
    session, oracle = oracle_session(frames, num_scale_frames=3)
    assert push_all(session, frames[:2]) == [[], []]
    flushed = session.flush()
    assert [(r.index, r.frame_type) for r in flushed] == [(0, FrameType.SCALE), (1, FrameType.SCALE)]
    (streamed,) = session.push(frames[2].image, frames[2].stamp_ns)
    assert streamed.frame_type == FrameType.KEYFRAME and streamed.sequence == 0
    assert session.flush() == []
    assert session.push(frames[3].image, 7) != []
    session.reset()
    assert session.stats().sequence == 1 and oracle.frames_stored == 0
    assert session.push(frames[0].image, 8) == [] and session.stats().frames_pending == 1
    session.reset()
    assert session.stats().frames_pending == 0 and session.flush() == []


def test_a_reset_counts_and_logs_each_frame_it_drops(caplog):
    frames = render(5)
    session, _ = oracle_session(frames, num_scale_frames=3)
    assert push_all(session, frames[:2]) == [[], []]
    with caplog.at_level("WARNING", logger="gct_stream_ros"):
        session.reset()
    assert session.stats().frames_dropped == 2
    assert "2 frame(s) waiting for the scale phase dropped" in caplog.text
    caplog.clear()
    session.push(frames[2].image, 9)
    assert session.flush() != []
    session.reset()
    assert session.stats().frames_dropped == 2 and "dropped" not in caplog.text


def test_every_good_frame_is_answered_when_other_sizes_interleave():
    """Two cameras on one topic: each size change ends the sequence, whose waiting frames still come out."""
    good, other = render(10), render(10, height=42, seed=1)
    session, _ = oracle_session(good + other, num_scale_frames=4)
    answered = []
    for position, (good_frame, other_frame) in enumerate(zip(good, other)):
        answered += [r.stamp_ns for r in session.push(good_frame.image, 2 * position)]
        answered += [r.stamp_ns for r in session.push(other_frame.image, 2 * position + 1)]
    answered += [r.stamp_ns for r in session.flush()]
    assert answered == list(range(20))
    assert session.stats().frames_dropped == 0


def test_stats_count_frames_and_time_steps():
    frames = render(6)
    session, oracle = oracle_session(frames, keyframe_mode="interval", keyframe_interval=2)
    push_all(session, frames)
    stats = session.stats()
    assert (stats.frames_pushed, stats.frames_emitted, stats.frames_pending) == (6, 6, 0)
    assert (stats.keyframes, stats.frames_stored, stats.revisions, stats.window) == (2, 4, 0, 0)
    assert stats.step_times.count == 5 and stats.step_times.max_ms >= stats.step_times.mean_ms > 0
    assert stats.cache.frames_stored == oracle.frames_stored == 4
    assert (stats.device, stats.dtype) == ("cpu", "float32")


def test_images_prepared_on_another_thread_give_the_results_of_push():
    frames = render(5)
    pushed = [r for rs in push_all(oracle_session(frames)[0], frames) for r in rs]
    session, _ = oracle_session(frames)
    with ThreadPoolExecutor(max_workers=1) as reader:
        prepared = list(reader.map(session.prepare, [frame.image for frame in frames]))
    results = [result for ready, frame in zip(prepared, frames)
               for result in session.push_prepared(ready, frame.stamp_ns)]
    assert [r.stamp_ns for r in results] == [r.stamp_ns for r in pushed]
    for result, expected in zip(results, pushed):
        np.testing.assert_array_equal(result.pose_c2w, expected.pose_c2w)
        np.testing.assert_array_equal(result.image, expected.image)
        np.testing.assert_array_equal(result.intrinsics_input, expected.intrinsics_input)
    assert session.step_times.count == 4 and session.step_times.total_ms > 0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_device_and_dtype_are_resolved_from_the_config(dtype):
    session, _ = oracle_session([], device="cpu", dtype=dtype)
    assert session.device == torch.device("cpu") and session.dtype == getattr(torch, dtype)
    session, _ = oracle_session([], device="auto", dtype="auto")
    assert session.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_step_time_includes_the_copy_of_the_outputs_to_the_host(monkeypatch):
    """A GPU step returns once queued: its time is only known when the outputs reach the host."""
    from gct_stream_ros.stream import estimate  # noqa: PLC0415
    from gct_stream_ros.stream import session as session_module  # noqa: PLC0415

    clock = [0.0]
    monkeypatch.setattr(session_module.time, "perf_counter", lambda: clock[0])
    copy = estimate.FrameEstimate.from_step.__func__

    def slow_copy(cls, *args, **kwargs):
        clock[0] += 0.025  # the device finishing the step before the copy returns
        return copy(cls, *args, **kwargs)

    monkeypatch.setattr(estimate.FrameEstimate, "from_step", classmethod(slow_copy))
    frames = render(4)
    session, _ = oracle_session(frames, num_scale_frames=2)
    results = [r for rs in push_all(session, frames) for r in rs]
    assert [r.timings_ms["step"] for r in results] == pytest.approx([50.0, 50.0, 25.0, 25.0])
    times = session.step_times
    assert times.count == 3 and times.total_ms == pytest.approx(100.0)


def _assert_same_results(results, expected):
    assert [(r.index, r.stamp_ns, r.revision, r.window, r.sequence, r.frame_type) for r in results] == [
        (r.index, r.stamp_ns, r.revision, r.window, r.sequence, r.frame_type) for r in expected]
    for result, truth in zip(results, expected):
        assert result.window_scale == truth.window_scale
        for name in ("pose_c2w", "intrinsics_input", "depth", "depth_conf", "world_points", "image",
                     "window_transform"):
            np.testing.assert_array_equal(getattr(result, name), getattr(truth, name), err_msg=name)


def test_deferred_results_assembled_later_on_another_thread_equal_those_of_push(monkeypatch):
    """Windows (revisions, a new similarity per window) and a size change (a flush inside a push) move the
    session's state on after each push: a deferred result must hold all it needs when it was placed."""
    frames = render(14) + render(1, height=42, seed=1)
    settings = {"window_mode": "online", "window_size": 5, "window_overlap": 2, "oracle_window_sim3_seed": 7}
    reference, _ = oracle_session(frames, **settings)
    expected = [r for rs in push_all(reference, frames) for r in rs] + reference.flush()
    session, _ = oracle_session(frames, **settings)
    assembled_on = []
    assemble = DeferredResult.assemble
    monkeypatch.setattr(DeferredResult, "assemble",
                        lambda self: assembled_on.append(threading.current_thread()) or assemble(self))
    deferred = [d for frame in frames
                for d in session.push_prepared_deferred(session.prepare(frame.image), frame.stamp_ns)]
    deferred += session.flush_deferred()
    assert not assembled_on  # nothing assembled by the session itself
    with ThreadPoolExecutor(max_workers=1) as assembler:
        results = list(assembler.map(DeferredResult.assemble, deferred))
    assert threading.main_thread() not in assembled_on and len(assembled_on) == len(expected)
    _assert_same_results(results, expected)
    assert any(r.revision for r in results) and results[-1].sequence == 1
    assert all(r.timings_ms["result"] > 0 for r in results)
