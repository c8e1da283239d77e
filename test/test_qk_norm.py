"""The fused q/k LayerNorm (``model/qk_norm.py``) against ``nn.LayerNorm`` in fp32, run by Triton's
interpreter on CPU tensors (``conftest.py``), and its place in ``Attention.project_in``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("triton")

from gct_stream_ros.model import qk_norm  # noqa: E402 - after the skip
from gct_stream_ros.model.attention import Attention  # noqa: E402

HEADS, DIM = 4, 64


def _norms(eps: float = 1e-5) -> tuple[nn.LayerNorm, nn.LayerNorm]:
    gen = torch.Generator().manual_seed(3)
    norms = nn.LayerNorm(DIM, eps=eps), nn.LayerNorm(DIM, eps=eps)
    with torch.no_grad():
        for norm in norms:  # distinct affine parts: a swap of q's and k's would show
            norm.weight.copy_(1.0 + 0.3 * torch.randn(DIM, generator=gen))
            norm.bias.copy_(0.2 * torch.randn(DIM, generator=gen))
    return norms


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens", [1, 37])  # 37 x 4 rows: the last program's rows are partly masked
def test_equals_layer_norm_in_fp32(dtype: torch.dtype, tokens: int) -> None:
    gen = torch.Generator().manual_seed(tokens)
    # a projection's output viewed as [B, N, 3, H, D], offsets and scales per channel as real keys have
    projection = (torch.randn(2, tokens, 3 * HEADS * DIM, generator=gen) * 3.0 + 1.5).to(dtype)
    qkv = projection.unflatten(-1, (3, HEADS, DIM))
    q_norm, k_norm = _norms()
    q, k = qk_norm.qk_layer_norm(qkv, q_norm, k_norm)
    assert q.shape == k.shape == (2, tokens, HEADS, DIM) and q.dtype == k.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(q, q_norm(qkv[..., 0, :, :].float()), atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(k, k_norm(qkv[..., 1, :, :].float()), atol=2e-5, rtol=1e-5)


def test_eps_is_the_modules() -> None:
    """Constant rows: the output is the bias, and the eps decides nothing else; near-constant rows
    show the eps."""
    qkv = torch.full((1, 3, 3, HEADS, DIM), 2.0, dtype=torch.bfloat16)
    qkv[0, :, :, :, 0] = 2.015625  # one channel off by a bf16 step: variance ~6e-6, comparable to eps
    for eps in (1e-5, 1e-2):
        q_norm, k_norm = _norms(eps)
        q, k = qk_norm.qk_layer_norm(qkv, q_norm, k_norm)
        with torch.no_grad():
            torch.testing.assert_close(q, q_norm(qkv[..., 0, :, :].float()), atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(k, k_norm(qkv[..., 1, :, :].float()), atol=2e-5, rtol=1e-5)


def test_not_available_on_cpu_or_without_layer_norms() -> None:
    qkv = torch.zeros(1, 2, 3, HEADS, DIM, dtype=torch.bfloat16)
    q_norm, k_norm = _norms()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not qk_norm.available(qkv, q_norm, k_norm)  # the kernel is for CUDA steps
    assert not qk_norm.available(qkv, nn.Identity(), nn.Identity())


def test_project_in_takes_the_kernel_where_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the kernel (the interpreter standing in for CUDA), ``project_in`` returns q, k, v in that
    order, q and k as their LayerNorms in fp32 compute them."""
    torch.manual_seed(0)
    attention = Attention(HEADS * DIM, HEADS, qk_norm=True).to(torch.bfloat16)
    attention.q_norm, attention.k_norm = (norm.to(torch.bfloat16) for norm in _norms())
    x = torch.randn(2, 9, HEADS * DIM).to(torch.bfloat16)
    with torch.no_grad():
        projection = attention.qkv(x).unflatten(-1, (3, HEADS, DIM))
        expected_q = nn.functional.layer_norm(projection[..., 0, :, :].float(), (DIM,),
                                              attention.q_norm.weight.float(), attention.q_norm.bias.float())
        expected_k = nn.functional.layer_norm(projection[..., 1, :, :].float(), (DIM,),
                                              attention.k_norm.weight.float(), attention.k_norm.bias.float())
        monkeypatch.setattr(qk_norm, "available", lambda *_: True)
        q, k, v = attention.project_in(x)
    torch.testing.assert_close(q, expected_q, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(k, expected_k, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(v, projection[..., 2, :, :], atol=0, rtol=0)
