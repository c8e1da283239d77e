"""Loading GCT weights: ``.pt``/``.pth`` (reference layout), ``.safetensors``, or the Hugging Face hub.

Loading is strict: a file that does not fit the configured architecture raises
``CheckpointError`` naming the missing and unexpected keys and the shape mismatches. The one
exception is ``OPTIONAL_HEAD_PREFIXES``: weights of optional heads the model was not built with.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from gct_stream_ros.cache.base import GlobalKVCache
from gct_stream_ros.model.config import GCTConfig
from gct_stream_ros.model.gct import GCTModel

HF_REPOSITORY = "robbyant/lingbot-map"
HF_DEFAULT_FILE = "lingbot-map.pt"
"""``hf`` selects this file; ``hf:NAME`` selects ``NAME.pt`` (e.g. ``hf:lingbot-map-long``)."""
OPTIONAL_HEAD_PREFIXES = ("point_head.", "local_point_head.")
"""Reference heads that inference can do without: their keys are ignored when the model lacks
the head (e.g. the randomly initialised point head some reference variants save)."""
_LISTED_KEYS = 8

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """The weights cannot be obtained or do not fit the model; the message says why."""


def resolve_checkpoint(checkpoint: str) -> Path:
    """A local path, or ``hf``/``hf:NAME`` downloaded through the Hugging Face cache."""
    if is_hub_checkpoint(checkpoint):
        filename = f"{checkpoint[3:]}.pt" if checkpoint.startswith("hf:") else HF_DEFAULT_FILE
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(repo_id=HF_REPOSITORY, filename=filename))
        except Exception as error:  # offline, unknown file, missing package: one clear message
            raise CheckpointError(f"cannot download {filename} from huggingface.co/{HF_REPOSITORY}: "
                                  f"{type(error).__name__}: {error}. "
                                  "Download it elsewhere and pass its path.") from None
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    return path


def is_hub_checkpoint(checkpoint: str) -> bool:
    return checkpoint == "hf" or checkpoint.startswith("hf:")


def load_state_dict(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file on the CPU: a dict with ``"model"`` or a bare state dict.

    ``allow_pickle``: accept ``.pt`` files that need full unpickling (the reference saves
    training arguments next to the weights). Unpickling can run arbitrary code, so it is only
    allowed for the official hub files and for an explicit ``gct_stream_convert`` by the user.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            if not allow_pickle:
                command = f"gct_stream_convert {path} {path.with_suffix('.safetensors')}"
                raise CheckpointError(f"{path} needs full unpickling, which can run code from the file. "
                                      f"If you trust it, convert it once: {command}") from None
            logger.warning("%s is not a plain tensor pickle; loading it with full unpickling", path)
            loaded = torch.load(path, map_location="cpu", weights_only=False)
    except CheckpointError:
        raise
    except Exception as error:  # OSError, pickle and safetensors format errors: one clear message
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from None
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict (neither a dict of tensors nor one under 'model')")
    return state


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the ignorable optional-head keys; ``CheckpointError`` if it does not fit."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    state = {key: value for key, value in state.items()
             if key in expected or not key.startswith(OPTIONAL_HEAD_PREFIXES)}
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    reshaped = sorted(f"{key} {tuple(state[key].shape)} != {expected[key]}"
                      for key in expected.keys() & state.keys() if tuple(state[key].shape) != expected[key])
    problems = [f"{label} ({len(items)}): {_listing(items)}"
                for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches", reshaped)) if items]
    if problems:
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(problems))
    return state


def _listing(items: list[str]) -> str:
    return ", ".join(items[:_LISTED_KEYS]) + (" ..." if len(items) > _LISTED_KEYS else "")


def build_model(config: GCTConfig, checkpoint: str | None, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32, cache: GlobalKVCache | None = None,
                half_depth_head: bool = False, half_camera_head: bool = False) -> GCTModel:
    """A ready ``GCTModel`` in eval mode on ``device``, aggregator in ``dtype`` (see ``to_inference_dtype``,
    also for ``half_depth_head`` and ``half_camera_head``).

    ``checkpoint``: a ``.pt``/``.pth``/``.safetensors`` path, ``hf``/``hf:NAME``, or ``None``/empty
    for random weights (only meaningful for tests with the tiny preset).
    """
    if not checkpoint:
        model = GCTModel(config, cache)
    else:
        state = load_state_dict(resolve_checkpoint(checkpoint), allow_pickle=is_hub_checkpoint(checkpoint))
        with torch.device("meta"):
            model = GCTModel(config, cache)
        state = check_state_dict(model, state)
        # assign: adopt the loaded tensors instead of allocating the 4.6 GB model twice
        model.load_state_dict(state, strict=True, assign=True)
        model.aggregator.reset_constants()
    model = model.to(device=device, dtype=torch.float32).eval()
    if dtype != torch.float32:
        model.to_inference_dtype(dtype, half_depth_head, half_camera_head)
    return model
