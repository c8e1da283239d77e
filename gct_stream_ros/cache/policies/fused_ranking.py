"""What the fused scorers (``fused_mass.py``, ``fused_diversity.py``) share: where they run, and the
eviction ranking of a slot by its state.

Used only where ``available(keys)``; every other device/dtype runs the torch code (``scorers.py``,
``attention_mass.py``), which the CPU tests pin; they also run these kernels through Triton's
interpreter (``test/test_fused_mass.py``, ``test/test_fused_diversity.py``,
``test/test_candidate_sums.py``). The CUDA tests
(``test/gpu/test_cache_policies_gpu.py``) check them against the torch and float64 reference computations.
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.policies.token_pool import EXPIRED_PATCH, EXPIRED_SPECIAL, PATCH
from gct_stream_ros.optional_packages import TRITON

HEAD_DIM = 64
"""The head dim the kernels are written for: the model's."""
FP32_LOWEST = torch.finfo(torch.float32).min


def available(keys: torch.Tensor) -> bool:
    """The fused kernels serve these keys: CUDA, half precision, head dim 64, Triton installed."""
    return (TRITON and keys.is_cuda and keys.dtype in (torch.bfloat16, torch.float16)
            and keys.shape[-1] == HEAD_DIM)


if TRITON:
    import triton
    import triton.language as tl

    _PATCH, _EXPIRED_PATCH, _EXPIRED_SPECIAL = (tl.constexpr(state) for state in (PATCH, EXPIRED_PATCH,
                                                                                   EXPIRED_SPECIAL))
    _FP32_LOWEST = tl.constexpr(FP32_LOWEST)

    @triton.jit
    def ranked(scores, state):
        """``token_pool.state_scores``: protected never go, expired go first, specials first."""
        ranking = tl.where(state == _PATCH, scores, float("inf"))
        ranking = tl.where(state == _EXPIRED_PATCH, _FP32_LOWEST, ranking)
        return tl.where(state == _EXPIRED_SPECIAL, float("-inf"), ranking)
