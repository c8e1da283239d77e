"""Which optional packages are installed, asked once; any layer may import it (it imports nothing of ours).

``TRITON``: the fused CUDA kernels of the budgeted caches (``cache/policies/fused_*.py``) and the model's
q/k LayerNorms (``model/qk_norm.py``) are written in Triton; without it those paths run as torch ops.
"""

from __future__ import annotations

import importlib.util

TRITON = importlib.util.find_spec("triton") is not None
