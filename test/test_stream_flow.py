"""Camera-induced flow magnitude against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gct_stream_ros.stream.flow import flow_magnitude

HEIGHT, WIDTH = 32, 48
FX = FY = 40.0


def encoding(translation=(0.0, 0.0, 0.0), focal: float = FX) -> torch.Tensor:
    """Identity rotation; fields of view giving ``focal`` pixels at HEIGHT x WIDTH."""
    fov_h = 2 * math.atan((HEIGHT / 2) / focal)
    fov_w = 2 * math.atan((WIDTH / 2) / focal)
    return torch.tensor([*translation, 0.0, 0.0, 0.0, 1.0, fov_h, fov_w], dtype=torch.float32)


def test_sideways_translation_gives_focal_times_baseline_over_depth():
    depth = torch.full((HEIGHT, WIDTH), 2.0)
    expected = FX * 0.1 / 2.0
    assert flow_magnitude(encoding((0.1, 0.0, 0.0)), encoding(), depth) == pytest.approx(expected, rel=1e-5)
    assert flow_magnitude(encoding(), encoding(), depth) == pytest.approx(0.0, abs=1e-5)


def test_only_every_eighth_pixel_is_sampled_and_invalid_depth_is_ignored():
    depth = torch.full((HEIGHT, WIDTH), 100.0)  # never sampled: would give a flow of 0.04
    depth[::8, ::8] = 2.0
    depth[::16, ::8] = 0.0  # sampled but invalid
    assert flow_magnitude(encoding((0.1, 0.0, 0.0)), encoding(), depth) == pytest.approx(2.0, rel=1e-5)


def test_points_behind_the_keyframe_camera_are_ignored():
    depth = torch.full((HEIGHT, WIDTH), 2.0)
    assert flow_magnitude(encoding((0.0, 0.0, -5.0)), encoding(), depth) == 0.0
    assert flow_magnitude(encoding(), encoding(), torch.zeros(HEIGHT, WIDTH)) == 0.0


def test_each_frame_uses_its_own_field_of_view():
    """Same pose, keyframe zoomed 2x: every sample moves away from the centre by its own offset."""
    depth = torch.full((HEIGHT, WIDTH), 3.0)
    v, u = np.mgrid[0:HEIGHT:8, 0:WIDTH:8]
    expected = np.hypot(u - WIDTH / 2, v - HEIGHT / 2).mean()
    assert flow_magnitude(encoding(), encoding(focal=2 * FX), depth) == pytest.approx(expected, rel=1e-5)
