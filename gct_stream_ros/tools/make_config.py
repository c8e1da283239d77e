"""Generate ``config/gct_stream.yaml`` from the settings table: every node parameter, its default and
a one-line comment, in the ROS parameters layout.

    python -m gct_stream_ros.tools.make_config config/gct_stream.yaml

``test_config.py`` checks the committed file is exactly what this writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from gct_stream_ros.settings import SETTINGS, Setting, Value

INDENT = "  "
HEADER = """\
# Every parameter of gct_stream_node with its default. Generated from gct_stream_ros/settings.py by
# `python -m gct_stream_ros.tools.make_config config/gct_stream.yaml`: edit the table, not this file.
# Copy it to change values, and pass the copy as params_file:=... (launch), --params-file (offline
# tool) or --ros-args --params-file (ros2 run). `/**` applies it whatever the node's name or namespace.
"""


def yaml_scalar(value: Value) -> str:
    """``value`` as a YAML scalar that reads back with its type (strings always quoted: 'off' is no bool)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        # YAML 1.1 readers take '1e-05' for a string; the mantissa needs a dot.
        return text if "." in text or "e" not in text else text.replace("e", ".0e", 1)
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)


def comment(entry: Setting) -> str:
    """The description, with the allowed values or the range."""
    if entry.choices:
        return f"{entry.description} [{', '.join(entry.choices)}]"
    if entry.low is not None and entry.high is not None:
        return f"{entry.description} [{entry.low:g} .. {entry.high:g}]"
    return entry.description


def render_config(settings: Sequence[Setting] = SETTINGS) -> str:
    """The YAML text: settings nested by their dotted names, in table order."""
    lines = [HEADER.rstrip("\n"), "/**:", f"{INDENT}ros__parameters:"]
    open_groups: list[str] = []
    for entry in settings:
        *groups, leaf = entry.name.split(".")
        shared = 0
        while shared < min(len(groups), len(open_groups)) and groups[shared] == open_groups[shared]:
            shared += 1
        for depth in range(shared, len(groups)):
            lines.append(f"{INDENT * (depth + 2)}{groups[depth]}:")
        open_groups = groups
        indent = INDENT * (len(groups) + 2)
        lines.append(f"{indent}# {comment(entry)}")
        lines.append(f"{indent}{leaf}: {yaml_scalar(entry.default)}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make_config", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, nargs="?", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    text = render_config()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
