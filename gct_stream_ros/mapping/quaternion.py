"""Rotation matrices to and from unit quaternions in ROS order (x, y, z, w)."""

from __future__ import annotations

import numpy as np


def quaternion_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """[4] unit quaternion (x, y, z, w) with w >= 0 of a 3x3 rotation.

    The input is first projected onto the nearest rotation (SVD), so slightly non-orthonormal
    estimates still give a unit quaternion of the rotation they approximate.
    """
    u, _, vt = np.linalg.svd(np.asarray(rotation, dtype=np.float64))
    r = u @ vt
    if np.linalg.det(r) < 0:
        r = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    # Shepperd's method: branch on the largest of the four squared components for stability.
    trace = np.trace(r)
    diagonal = np.diag(r)
    if trace >= diagonal.max():
        w = np.sqrt(1.0 + trace) / 2.0
        q = np.array([(r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w),
                      (r[1, 0] - r[0, 1]) / (4 * w), w])
    else:
        i = int(np.argmax(diagonal))
        j, k = (i + 1) % 3, (i + 2) % 3
        xyz = np.zeros(3)
        xyz[i] = np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k]) / 2.0
        xyz[j] = (r[j, i] + r[i, j]) / (4 * xyz[i])
        xyz[k] = (r[k, i] + r[i, k]) / (4 * xyz[i])
        q = np.array([*xyz, (r[k, j] - r[j, k]) / (4 * xyz[i])])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def matrix_from_quaternion(quaternion: np.ndarray) -> np.ndarray:
    """3x3 rotation of a quaternion (x, y, z, w); it is normalised first."""
    x, y, z, w = np.asarray(quaternion, dtype=np.float64) / np.linalg.norm(quaternion)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
