"""Resolve the 'auto' device, precision and resize settings against the machine."""

from __future__ import annotations

import torch

from gct_stream_ros.stream.config import PRECISIONS, ConfigError

DTYPES = {name: getattr(torch, name) for name in PRECISIONS}
BF16_MIN_CAPABILITY = 8


def resolve_device(name: str) -> torch.device:
    """'auto' is CUDA when available, else the CPU; other names are taken as they are.

    A CUDA device this machine does not have is a ``ConfigError`` (a settings problem the user
    can fix), not the traceback PyTorch would give on the first tensor moved there.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise ConfigError(f"device={name!r} but CUDA is not available on this machine "
                              f"(PyTorch {torch.__version__}); use 'cpu' or 'auto'")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device={name!r} but this machine has {count} CUDA device(s) (cuda:0 .. "
                              f"cuda:{count - 1})")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' is fp32 on the CPU, bf16 on CUDA GPUs that support it (sm80+), fp16 on older ones."""
    if name != "auto":
        return DTYPES[name]
    if device.type != "cuda":
        return torch.float32
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= BF16_MIN_CAPABILITY else torch.float16


def resolve_resize(name: str, dtype: torch.dtype) -> str:
    """'auto' is the reference's exact PIL resize in fp32 and the faster 'torch' one in half precision,
    where the network's own rounding is far larger than the resize's (<= 2 grey levels)."""
    if name != "auto":
        return name
    return "pil" if dtype == torch.float32 else "torch"


def memory_allocated_bytes(device: str) -> int:
    """Bytes the tensors of this process hold on ``device`` ('cuda', 'cuda:N'); 0 for the CPU."""
    resolved = torch.device(device)
    if resolved.type != "cuda" or not torch.cuda.is_available():
        return 0
    return int(torch.cuda.memory_allocated(resolved))
