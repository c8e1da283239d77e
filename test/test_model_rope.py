"""RoPE: token coordinates (2D and 3D rules) and the rotations' defining properties."""

from __future__ import annotations

import torch

from gct_stream_ros.model.rope import frame_positions_2d, frame_positions_3d, rope_2d, rope_3d


def test_2d_positions_put_specials_at_origin_and_patches_one_based():
    positions = frame_positions_2d(grid_h=2, grid_w=3, num_special=6)
    assert positions[:6].tolist() == [[0, 0]] * 6
    assert positions[6:].tolist() == [[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]


def test_3d_positions_put_special_k_on_the_diagonal_and_patches_after_the_specials():
    positions = frame_positions_3d(torch.tensor([5, 9]), grid_h=2, grid_w=2, num_special=3)
    frame0, frame1 = positions.reshape(2, 7, 3)
    assert frame0[:3].tolist() == [[5, 0, 0], [5, 1, 1], [5, 2, 2]]
    assert frame0[3:].tolist() == [[5, 3, 3], [5, 3, 4], [5, 4, 3], [5, 4, 4]]
    assert (frame1[:, 0] == 9).all() and torch.equal(frame1[:, 1:], frame0[:, 1:])


def _random(n: int, dim: int = 64) -> torch.Tensor:
    return torch.randn(n, 1, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_2d_rotation_matches_its_formula_row_half_then_column_half():
    x = _random(1)
    row, col = 3, 5
    rotated = rope_2d(torch.tensor([[row, col]]), head_dim=64, base=100.0)(x)[0, 0]
    j = torch.arange(16, dtype=torch.float64)
    for half, position in ((0, row), (32, col)):
        theta = position * 100.0 ** (-2 * j / 32)
        a, b = x[0, 0, half:half + 16], x[0, 0, half + 16:half + 32]
        first, second = rotated[half:half + 16], rotated[half + 16:half + 32]
        torch.testing.assert_close(first, a * theta.cos() - b * theta.sin(), atol=1e-6, rtol=0)
        torch.testing.assert_close(second, b * theta.cos() + a * theta.sin(), atol=1e-6, rtol=0)


def test_3d_rotation_pairs_are_interleaved_and_split_time_row_column():
    x = _random(1)
    t, h, w = 4, 7, 11
    rotated = rope_3d(torch.tensor([[t, h, w]]), split=(20, 22, 22), theta=10000.0)(x)[0, 0]
    for m in (0, 9, 10, 20, 21, 31):
        axis_start, dim, position = (0, 20, t) if m < 10 else (10, 22, h) if m < 21 else (21, 22, w)
        angle = torch.tensor(position * 10000.0 ** (-2 * (m - axis_start) / dim), dtype=torch.float64)
        even, odd = x[0, 0, 2 * m], x[0, 0, 2 * m + 1]
        torch.testing.assert_close(rotated[2 * m], even * angle.cos() - odd * angle.sin())
        torch.testing.assert_close(rotated[2 * m + 1], even * angle.sin() + odd * angle.cos())


def test_3d_scores_depend_only_on_coordinate_differences_and_large_times_work():
    q, k = _random(1), -_random(1)
    positions = torch.tensor([[3, 1, 2], [1, 4, 4], [1003, 1, 2], [1001, 4, 4]])
    rotation = rope_3d(positions, (20, 22, 22), 10000.0)
    qq, kk = rotation(torch.cat((q, q, q, q))), rotation(torch.cat((k, k, k, k)))
    near = (qq[0] * kk[1]).sum()
    far = (qq[2] * kk[3]).sum()  # same differences, beyond the reference's 1024-frame tables
    torch.testing.assert_close(near, far, atol=1e-9, rtol=1e-9)
