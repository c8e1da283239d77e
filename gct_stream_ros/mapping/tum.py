"""Trajectories in the TUM RGB-D format (``stamp tx ty tz qx qy qz qw`` per line), as evo and the TUM
benchmark tools read them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gct_stream_ros.mapping.atomic_file import write_atomically
from gct_stream_ros.mapping.quaternion import matrix_from_quaternion, quaternion_from_matrix
from gct_stream_ros.stamps import join_stamp, split_stamp


def tum_text(stamps_ns: Sequence[int], poses: Sequence[np.ndarray]) -> str:
    """One line per pose (4x4 sensor-to-world); stamps in seconds with nanosecond digits."""
    if len(stamps_ns) != len(poses):
        raise ValueError(f"{len(stamps_ns)} stamps for {len(poses)} poses")
    lines = []
    for stamp_ns, pose in zip(stamps_ns, poses):
        seconds, nanoseconds = split_stamp(stamp_ns)
        translation = " ".join(f"{c:.9g}" for c in pose[:3, 3])
        rotation = " ".join(f"{c:.9g}" for c in quaternion_from_matrix(pose[:3, :3]))
        lines.append(f"{seconds}.{nanoseconds:09d} {translation} {rotation}\n")
    return "".join(lines)


def write_tum(path: Path | str, stamps_ns: Sequence[int], poses: Sequence[np.ndarray]) -> Path:
    return write_atomically(path, tum_text(stamps_ns, poses).encode("ascii"))


def read_tum(path: Path | str) -> tuple[list[int], np.ndarray]:
    """``(stamps_ns, poses [N, 4, 4])``; comment lines (``#``) and blank lines are skipped."""
    stamps: list[int] = []
    poses = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 8:
            raise ValueError(f"{path}:{number}: expected 8 fields, got {len(fields)}")
        seconds, _, fraction = fields[0].partition(".")
        stamps.append(join_stamp(int(seconds), int(fraction.ljust(9, "0")[:9] or 0)))
        values = [float(f) for f in fields[1:]]
        pose = np.eye(4)
        pose[:3, 3] = values[:3]
        pose[:3, :3] = matrix_from_quaternion(np.array(values[3:]))
        poses.append(pose)
    return stamps, np.array(poses).reshape(-1, 4, 4)
