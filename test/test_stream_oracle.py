"""The oracle network: truth per image, world frame per sequence, protocol checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracle_network import OracleNetwork
from test_stream_support import WIDTH, relative_poses, render

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.model.pose_encoding import decode_pose_encoding
from gct_stream_ros.model.preprocess import preprocess_image


@pytest.fixture(scope="module")
def views():
    return render(3)


def tensors(frames) -> torch.Tensor:
    return torch.stack([preprocess_image(frame.image, WIDTH)[0] for frame in frames])


def test_poses_are_relative_to_the_first_frame_of_the_sequence(views):
    oracle = OracleNetwork.for_synthetic(views, WIDTH)
    output = oracle.step(tensors(views[:2]))
    single = oracle.step(tensors(views[2:]), StepMode.SKIP)
    encodings = torch.cat([output.pose_enc, single.pose_enc]).double()
    c2w, intrinsics = decode_pose_encoding(encodings, (56, WIDTH))
    np.testing.assert_allclose(c2w.numpy(), relative_poses(views), atol=1e-6)
    np.testing.assert_allclose(intrinsics[0].numpy(), views[0].intrinsics, rtol=1e-6)
    np.testing.assert_allclose(output.depth[1].numpy(), views[1].depth)
    assert output.world_points is None and oracle.frames_stored == 2
    oracle.reset()
    restarted = oracle.step(tensors(views[2:]))
    c2w, _ = decode_pose_encoding(restarted.pose_enc.double(), (56, WIDTH))
    np.testing.assert_allclose(c2w[0].numpy(), np.eye(4), atol=1e-6)


def test_each_sequence_gets_its_own_similarity(views):
    oracle = OracleNetwork.for_synthetic(views, WIDTH, window_sim3_seed=1)
    first = oracle.step(tensors(views[:1]))
    oracle.reset()
    second = oracle.step(tensors(views[:1]))
    sim3_first, sim3_second = oracle.sequence_sim3[-2:]
    assert sim3_first.scale != sim3_second.scale
    np.testing.assert_allclose(first.depth[0].numpy(), views[0].depth * sim3_first.scale, rtol=1e-6)
    np.testing.assert_allclose(second.depth[0].numpy(), views[0].depth * sim3_second.scale, rtol=1e-6)
    np.testing.assert_allclose(second.pose_enc[0, :3].numpy(), sim3_second.translation, rtol=1e-6)


def test_defer_commit_and_rollback_are_checked(views):
    oracle = OracleNetwork.for_synthetic(views, WIDTH, point_head=True)
    oracle.step(tensors(views[:1]))
    output = oracle.step(tensors(views[1:2]), StepMode.DEFER)
    assert output.world_points.shape == (1, 56, WIDTH, 3) and oracle.frames_stored == 2
    with pytest.raises(RuntimeError, match="without commit"):
        oracle.step(tensors(views[2:]))
    oracle.rollback()
    assert oracle.frames_stored == 1
    with pytest.raises(RuntimeError, match="without a pending DEFER"):
        oracle.commit()
    with pytest.raises(RuntimeError, match="phase 1"):
        oracle.step(tensors(views[1:]))
    oracle.step(tensors(views[2:]), StepMode.DEFER)
    oracle.commit()
    assert oracle.frames_stored == 2 and oracle.cache_stats().frames_stored == 2
    assert oracle.modes() == ["store", "defer", "defer"]
    assert [call[0] for call in oracle.calls[-4:]] == ["step", "rollback", "step", "commit"]


def test_unknown_images_and_wrong_sizes_are_refused(views):
    oracle = OracleNetwork.for_synthetic(views[:1], WIDTH)
    with pytest.raises(KeyError, match="does not know"):
        oracle.step(tensors(views[1:2]))
    with pytest.raises(ValueError, match="the model sees"):
        OracleNetwork.for_synthetic(render(1, width=2 * WIDTH, height=112), WIDTH)
