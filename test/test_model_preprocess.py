"""Preprocessing: the reference's crop-mode sizes, the PIL bicubic resize, pixel/intrinsics mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gct_stream_ros.model.preprocess import RESIZE_METHODS, model_size, preprocess_image, resize_image
from gct_stream_ros.stream.config import RESIZE_METHODS as CONFIG_RESIZE_METHODS


@pytest.mark.parametrize(("input_hw", "model_hw", "resized_h"), [
    ((480, 640), (392, 518), 392),    # 4:3
    ((720, 1280), (294, 518), 294),   # 16:9
    ((378, 518), (378, 518), 378),
    ((1000, 500), (518, 518), 1036),  # portrait: centre crop
])
def test_model_sizes_follow_the_reference_rounding(input_hw, model_hw, resized_h):
    geometry = model_size(input_hw)
    assert geometry.model_hw == model_hw
    assert geometry.resized_hw == (resized_h, 518)
    assert geometry.crop_top == (resized_h - model_hw[0]) // 2


def test_target_width_must_be_a_patch_multiple():
    with pytest.raises(ValueError):
        model_size((480, 640), target_width=500)


def test_pixels_are_the_pil_bicubic_resize_cropped_and_scaled_to_unit_range():
    image = np.random.default_rng(0).integers(0, 256, (100, 40, 3), dtype=np.uint8)
    tensor, geometry = preprocess_image(image, target_width=56)
    expected = np.asarray(Image.fromarray(image).resize((56, 140), Image.Resampling.BICUBIC))
    top = geometry.crop_top
    assert tensor.shape == (3, 56, 56) and top == 42
    cropped = torch.from_numpy(expected[top:top + 56].copy()).permute(2, 0, 1)
    torch.testing.assert_close(tensor, cropped / 255.0)


@pytest.mark.parametrize(("input_hw", "width"), [((467, 640), 518), ((1080, 1920), 518), ((24, 32), 70),
                                                 ((100, 40), 56)])
def test_the_torch_resize_is_the_pil_filter_up_to_rounding(input_hw, width):
    image = np.random.default_rng(1).integers(0, 256, (*input_hw, 3), dtype=np.uint8)
    exact, geometry = resize_image(image, width, "pil")
    fast, fast_geometry = resize_image(image, width, "torch")
    assert fast_geometry == geometry and fast.shape == exact.shape and fast.dtype == np.uint8
    difference = np.abs(fast.astype(int) - exact.astype(int))
    assert difference.max() <= 2 and (difference > 0).mean() < 0.01


def test_the_model_input_is_the_resized_image_in_unit_range():
    image = np.random.default_rng(2).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    for method in RESIZE_METHODS:
        rgb, _ = resize_image(image, 42, method)
        tensor, _ = preprocess_image(image, 42, method)
        torch.testing.assert_close(tensor, torch.from_numpy(rgb).permute(2, 0, 1) / 255.0)


def test_unknown_resize_methods_are_refused_and_the_config_knows_the_same_ones():
    with pytest.raises(ValueError, match="not one of pil, torch"):
        resize_image(np.zeros((28, 28, 3), np.uint8), 28, "cv2")
    assert ("auto", *RESIZE_METHODS) == CONFIG_RESIZE_METHODS


def test_rejects_non_rgb_uint8():
    with pytest.raises(ValueError):
        preprocess_image(np.zeros((10, 10), dtype=np.uint8))


def test_points_and_intrinsics_map_consistently_both_ways():
    geometry = model_size((1000, 400), target_width=56)  # resized to 56x140: scale 0.14, 42 rows cropped
    K_input = np.array([[800.0, 0, 250], [0, 820.0, 500], [0, 0, 1]])  # noqa: N806
    K_model = geometry.intrinsics_to_model(K_input)  # noqa: N806
    np.testing.assert_allclose(K_model[0], [800 * 0.14, 0, 250 * 0.14])
    np.testing.assert_allclose(K_model[1], [0, 820 * 0.14, 500 * 0.14 - 42])
    np.testing.assert_allclose(geometry.intrinsics_to_input(K_model), K_input)
    # a 3D point projects to corresponding pixels in both images
    point = np.array([0.3, -0.2, 2.0])
    uv_input = (K_input @ point)[:2] / point[2]
    uv_model = (K_model @ point)[:2] / point[2]
    np.testing.assert_allclose(geometry.points_to_model(uv_input), uv_model)
    np.testing.assert_allclose(geometry.points_to_input(uv_model), uv_input)
