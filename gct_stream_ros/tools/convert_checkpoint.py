"""Convert a trusted reference ``.pt`` checkpoint to ``.safetensors`` (no code runs on later loads).

    gct_stream_convert lingbot-map.pt lingbot-map.safetensors [--preset lingbot-map]

The reference pickles training arguments next to its weights, so reading its ``.pt`` files needs
full unpickling, which can execute code from the file. Running this tool is the explicit
statement that you trust the file; the node and the offline tools then load the result safely.
The weights are checked against the model first (same keys and shapes), so a file that would
not load is never written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save

from gct_stream_ros.mapping.atomic_file import write_atomically
from gct_stream_ros.model.checkpoint import CheckpointError, check_state_dict, load_state_dict
from gct_stream_ros.model.config import PRESETS, GCTConfig
from gct_stream_ros.model.gct import GCTModel


def convert(source: Path, target: Path, preset: str = "lingbot-map") -> int:
    """Write ``source``'s weights to ``target``; returns the number of tensors written."""
    state = load_state_dict(source, allow_pickle=True)
    with torch.device("meta"):
        model = GCTModel(GCTConfig.preset(preset))
    state = check_state_dict(model, state)
    # safetensors stores dense tensors only
    tensors = {key: value.detach().contiguous() for key, value in state.items()}
    write_atomically(target, save(tensors, metadata={"converted_from": source.name}))
    return len(tensors)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="trusted .pt/.pth checkpoint of the reference")
    parser.add_argument("target", type=Path, help="the .safetensors file to write")
    parser.add_argument("--preset", default="lingbot-map", choices=PRESETS,
                        help="architecture the weights must fit (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.target.suffix != ".safetensors":
        parser.error(f"target must end in .safetensors: {args.target}")
    try:
        count = convert(args.source, args.target, args.preset)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {count} tensors to {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
