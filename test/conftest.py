"""Shared fixtures: tiny random GCT models and deterministic frames.

Without a CUDA device, Triton (where installed) runs its kernels in its interpreter on CPU
tensors, so that the fused kernels of ``cache/policies`` are tested on every machine. The switch
is read when a kernel is defined, so it is set here, before the package is imported.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402 - after the interpreter switch, as the package imports below

from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.gct import GCTModel


@pytest.fixture
def tiny_model():
    """Factory of tiny random models (seeded, eval mode): ``tiny_model(**config_overrides)``."""

    def make(**overrides) -> GCTModel:
        torch.manual_seed(0)
        config = GCTConfig.preset("tiny", **{"scale_frames": 2, "sliding_window": 2, **overrides})
        model = GCTModel(config).eval()
        # zero tokens and small LayerScales would hide mistakes (token variants, cross-frame paths)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith(("token", "tokens", "pos_embed", "gamma")):
                    parameter.normal_(0.0, 0.2)
        return model

    return make


@pytest.fixture
def frames():
    """Deterministic RGB frames in [0, 1]: ``frames(count, height=42, width=56)`` -> ``[S, 3, H, W]``."""

    def make(count: int, height: int = 42, width: int = 56) -> torch.Tensor:
        return torch.rand(count, 3, height, width, generator=torch.Generator().manual_seed(1))

    return make
