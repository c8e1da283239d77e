"""The fused q/k LayerNorm on CUDA (``model/qk_norm.py``): taken by the aggregator's attention under
autocast, eager and compiled, equal to the LayerNorm modules' fp32 output.

Run on a GPU machine: ``python3 -m pytest -q test/gpu/test_qk_norm_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from gct_stream_ros.model import qk_norm
from gct_stream_ros.model.attention import Attention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _attention() -> Attention:
    torch.manual_seed(0)
    attention = Attention(1024, 16, qk_norm=True)
    with torch.no_grad():
        for norm in (attention.q_norm, attention.k_norm):
            norm.weight.normal_(1.0, 0.3)
            norm.bias.normal_(0.0, 0.2)
    return attention.cuda().to(torch.bfloat16)


@pytest.mark.parametrize("compiled", [False, True])
def test_project_in_under_autocast_equals_the_modules(compiled: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    attention = _attention()
    x = torch.randn(1, 978, 1024, device="cuda")  # a frame's tokens at 378x504
    project_in = torch.compile(attention.project_in, dynamic=False) if compiled else attention.project_in
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        qkv = attention.qkv(x).unflatten(-1, (3, 16, 64))
        assert qk_norm.available(qkv, attention.q_norm, attention.k_norm)
        q, k, v = project_in(x)
        monkeypatch.setattr(qk_norm, "available", lambda *_: False)
        expected_q, expected_k, expected_v = attention.project_in(x)
    assert q.dtype == expected_q.dtype == torch.float32
    torch.testing.assert_close(q, expected_q, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(k, expected_k, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(v, expected_v, atol=0, rtol=0)


def test_not_taken_without_autocast_or_with_strided_channels() -> None:
    attention = _attention()
    x = torch.randn(1, 8, 1024, device="cuda", dtype=torch.bfloat16)
    qkv = attention.qkv(x).unflatten(-1, (3, 16, 64))
    assert not qk_norm.available(qkv, attention.q_norm, attention.k_norm)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert qk_norm.available(qkv, attention.q_norm, attention.k_norm)
        assert not qk_norm.available(qkv.transpose(-1, -2), attention.q_norm, attention.k_norm)
