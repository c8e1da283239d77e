"""A checkpoint file holding the shared deterministic filler weights, for runs without the real one.

The node and ``gct_stream_offline`` load weights only from a checkpoint (``model.checkpoint``), so
an end-to-end timing run without the official weights needs a file: this writes the ViT-L
``lingbot-map`` preset (or ``--preset``) in our own key layout as ``.safetensors`` (fp32, ~4.6 GB for
ViT-L), every floating-point entry from ``fill_deterministic``'s values (``shared/parity/weights.py``,
the same as ``model_step.py``'s weights before their cast). Geometry from these weights is
meaningless; time and memory are the real model's.

    python benchmarks/filler_checkpoint.py --weights-py .shared/parity/weights.py /tmp/filler.safetensors
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import fill_weights  # noqa: E402 - the script's folder is put on the path first

from gct_stream_ros.model.config import GCTConfig  # noqa: E402
from gct_stream_ros.model.gct import GCTModel  # noqa: E402

DEFAULT_SEED = 20261122
"""``model_step.py``'s seed."""


def write_filler_checkpoint(path: Path, weights_py: str, preset: str = "lingbot-map",
                            seed: int = DEFAULT_SEED) -> int:
    """Write the checkpoint; return its number of entries."""
    with torch.device("meta"):
        model = GCTModel(GCTConfig.preset(preset))
    model.materialize("cpu")
    fill_weights(model, weights_py, seed)
    # clone: entries that share storage (views) cannot be saved as they are
    state = {key: tensor.detach().clone().contiguous() for key, tensor in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return len(state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the .safetensors file to write")
    parser.add_argument("--weights-py", required=True, help="path of shared/parity/weights.py")
    parser.add_argument("--preset", default="lingbot-map")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    entries = write_filler_checkpoint(args.output, args.weights_py, args.preset, args.seed)
    print(f"wrote {args.output}: {entries} entries, {args.output.stat().st_size / 2**30:.2f} GiB, "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
