"""Coloured point clouds as binary little-endian PLY (xyz float32, rgb uint8): what MeshLab, CloudCompare
and Open3D read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gct_stream_ros.mapping.atomic_file import write_atomically

VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
_HEADER = ("ply\nformat binary_little_endian 1.0\nelement vertex {count}\n"
           "property float x\nproperty float y\nproperty float z\n"
           "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")


def ply_bytes(xyz: np.ndarray, rgb: np.ndarray) -> bytes:
    """The PLY file of ``xyz`` [N, 3] and ``rgb`` [N, 3] uint8."""
    xyz = np.asarray(xyz)
    rgb = np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise ValueError(f"expected xyz and rgb of shape [N, 3], got {xyz.shape} and {rgb.shape}")
    vertices = np.empty(len(xyz), dtype=VERTEX)
    for axis, name in enumerate("xyz"):
        vertices[name] = xyz[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = rgb[:, channel]
    return _HEADER.format(count=len(xyz)).encode("ascii") + vertices.tobytes()


def write_ply(path: Path | str, xyz: np.ndarray, rgb: np.ndarray) -> Path:
    return write_atomically(path, ply_bytes(xyz, rgb))


def read_ply(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz [N, 3] float32, rgb [N, 3] uint8)`` of a file written by ``write_ply``."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path} is not a PLY file")
    header = data[:end].decode("ascii")
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary little-endian PLY is read")
    count = next(int(line.split()[2]) for line in header.splitlines() if line.startswith("element vertex"))
    vertices = np.frombuffer(data, dtype=VERTEX, count=count, offset=end + len(b"end_header\n"))
    xyz = np.stack([vertices[name] for name in "xyz"], axis=1)
    rgb = np.stack([vertices[name] for name in ("red", "green", "blue")], axis=1)
    return xyz, rgb
