"""A procedural indoor scene rendered by ray casting: test data and demo sample, no downloads.

The scene is an axis-aligned box room with a few boxes standing on its floor, every surface
carrying a procedural texture (tiles, stripes, multi-scale value noise) so that images have
detail at any resolution. World axes follow OpenCV: x right, y down, z forward; the floor is
at ``y = +FLOOR_Y``. Rendering is exact: the depth is the true z-depth of the surface seen at
each pixel and the poses/intrinsics are the ones used to cast the rays, with the pixel
convention of the model (pixel ``(u, v)`` at integer coordinates, principal point at
``(W/2, H/2)``), so an oracle built on them is consistent to float precision.

Trajectories are either the endless ``walkthrough`` (smooth sliding and panning, any length)
or a list of ``Segment`` s (still, pure rotation, translation, fast motion) whose per-frame
motion is expressed in the camera frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gct_stream_ros.stamps import NS_PER_S

ROOM_MIN = np.array([-4.0, -1.6, -3.0])
ROOM_MAX = np.array([4.0, 1.2, 6.0])
FLOOR_Y = ROOM_MAX[1]
DEFAULT_FOV_DEG = 60.0
DEFAULT_FPS = 30.0


@dataclass
class SyntheticFrame:
    """One rendered view with its exact geometry."""

    index: int
    stamp_ns: int
    image: np.ndarray
    """[H, W, 3] uint8 RGB."""
    depth: np.ndarray
    """[H, W] float32 z-depth (metres) of the visible surface."""
    c2w: np.ndarray
    """[4, 4] float64 camera-to-world pose, OpenCV optical axes."""
    intrinsics: np.ndarray
    """[3, 3] float64 pinhole matrix, principal point at (W/2, H/2)."""


@dataclass(frozen=True)
class Segment:
    """``frames`` frames of constant motion, expressed per frame in the current camera frame."""

    name: str
    frames: int
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Metres per frame along the camera's (x right, y down, z forward) axes."""
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Degrees per frame about the camera's x (pitch), y (yaw) and z (roll) axes."""

    @classmethod
    def still(cls, frames: int) -> Segment:
        return cls("still", frames)

    @classmethod
    def rotate(cls, frames: int, yaw_deg_per_frame: float = 1.5) -> Segment:
        return cls("rotate", frames, rotation_deg=(0.0, yaw_deg_per_frame, 0.0))

    @classmethod
    def translate(cls, frames: int, metres_per_frame: float = 0.03,
                  direction: tuple[float, float, float] = (1.0, 0.0, 0.0)) -> Segment:
        unit = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
        return cls("translate", frames, translation=tuple(float(c) for c in unit * metres_per_frame))

    @classmethod
    def fast(cls, frames: int) -> Segment:
        """Quick forward-sideways motion with panning: large flow on every frame."""
        return cls("fast", frames, translation=(0.12, 0.0, 0.08), rotation_deg=(0.0, 4.0, 0.0))


def rotation_matrix(pitch_deg: float, yaw_deg: float, roll_deg: float) -> np.ndarray:
    """``Ry · Rx · Rz``: yaw about the (downward) y axis dominates, as for a camera panning on a tripod."""
    ax, ay, az = (math.radians(a) for a in (pitch_deg, yaw_deg, roll_deg))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return ry @ rx @ rz


def start_pose() -> np.ndarray:
    """The camera at the room's centre line, 1.2 m above the floor, looking down the room (+z)."""
    pose = np.eye(4)
    pose[:3, 3] = (0.0, FLOOR_Y - 1.2, -1.5)
    return pose


def segment_poses(segments: Sequence[Segment], start: np.ndarray | None = None) -> np.ndarray:
    """[N, 4, 4] c2w poses: the start pose, then each frame moved by its segment's motion.

    The first frame of the first segment is the start pose; every later frame applies the
    motion of the segment it belongs to (so a segment's motion is seen between its frames and
    the previous frame).
    """
    pose = start_pose() if start is None else np.array(start, dtype=np.float64)
    poses = []
    for segment in segments:
        step = np.eye(4)
        step[:3, :3] = rotation_matrix(*segment.rotation_deg)
        step[:3, 3] = segment.translation
        for _ in range(segment.frames):
            if poses:
                pose = pose @ step
            poses.append(pose.copy())
    return np.stack(poses) if poses else np.zeros((0, 4, 4))


def walkthrough_poses(num_frames: int) -> np.ndarray:
    """[N, 4, 4] c2w poses of a smooth, periodic slide-and-pan that stays clear of the boxes."""
    poses = np.zeros((num_frames, 4, 4))
    for i in range(num_frames):
        phase = 2.0 * math.pi * i
        pose = start_pose()
        pose[:3, 3] += (0.8 * math.sin(phase / 120.0), 0.15 * math.sin(phase / 75.0),
                        0.6 * (1.0 - math.cos(phase / 160.0)))
        pose[:3, :3] = rotation_matrix(4.0 * math.sin(phase / 110.0), 20.0 * math.sin(phase / 90.0), 0.0)
        poses[i] = pose
    return poses


def intrinsics_for(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """Square pixels with the given horizontal field of view, principal point at the centre."""
    focal = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


class SyntheticScene:
    """A seeded room; ``render`` and ``render_sequence`` are deterministic for a given seed."""

    def __init__(self, seed: int = 0, num_boxes: int = 4) -> None:
        self.seed = seed
        rng = np.random.default_rng(seed)
        self._palette = rng.uniform(0.25, 0.95, size=(6 + num_boxes, 3))
        boxes = []
        for k in range(num_boxes):
            size = rng.uniform([0.4, 0.3, 0.4], [1.1, 1.2, 1.1])
            # Alternate sides so the centre line (the default camera path) stays free.
            side = -1.0 if k % 2 == 0 else 1.0
            centre_x = side * rng.uniform(1.4, ROOM_MAX[0] - size[0] / 2 - 0.1)
            centre_z = rng.uniform(0.5, ROOM_MAX[2] - size[2] / 2 - 0.1)
            low = np.array([centre_x - size[0] / 2, FLOOR_Y - size[1], centre_z - size[2] / 2])
            boxes.append((low, low + size))
        self.boxes: list[tuple[np.ndarray, np.ndarray]] = boxes

    def render(self, c2w: np.ndarray, width: int, height: int,
               fov_deg: float = DEFAULT_FOV_DEG) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ray-cast one view: ``(image [H,W,3] uint8, depth [H,W] float32, intrinsics [3,3])``."""
        intrinsics = intrinsics_for(width, height, fov_deg)
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        # Camera-frame rays with unit z, so the ray parameter of a hit is its z-depth.
        rays_cam = np.stack([(u - intrinsics[0, 2]) / intrinsics[0, 0],
                             (v - intrinsics[1, 2]) / intrinsics[1, 1], np.ones_like(u)], axis=-1)
        rays = rays_cam @ c2w[:3, :3].T  # [H, W, 3] world directions
        origin = c2w[:3, 3]
        depth, surface, normal_axis = self._intersect(origin, rays)
        points = origin + rays * depth[..., None]
        colour = self._shade(points, surface, normal_axis)
        image = np.clip(np.round(colour * 255.0), 0, 255).astype(np.uint8)
        return image, depth.astype(np.float32), intrinsics

    def render_sequence(self, num_frames: int, width: int, height: int,
                        trajectory: str | Sequence[Segment] | None = None,
                        fov_deg: float = DEFAULT_FOV_DEG, fps: float = DEFAULT_FPS) -> list[SyntheticFrame]:
        """Render ``num_frames`` views along ``trajectory`` ('walkthrough' by default, or segments).

        A segment list must cover at least ``num_frames`` frames (the first ones are rendered).
        Stamps start at 0 and advance by ``1/fps``.
        """
        poses = trajectory_poses(num_frames, trajectory)
        frames = []
        for index, c2w in enumerate(poses):
            image, depth, intrinsics = self.render(c2w, width, height, fov_deg)
            frames.append(SyntheticFrame(index=index, stamp_ns=round(index * NS_PER_S / fps), image=image,
                                         depth=depth, c2w=c2w, intrinsics=intrinsics))
        return frames

    def _intersect(self, origin: np.ndarray, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest hit per ray: ``(t [H,W], surface id [H,W], axis of the hit face's normal [H,W])``.

        Surface ids: 0..5 the room faces (axis*2 + (0 low side, 1 high side)), 6.. the boxes.
        """
        with np.errstate(divide="ignore", invalid="ignore"):
            inverse = 1.0 / rays
        # Inside the room every ray leaves through the face its direction points to.
        exits = np.where(inverse > 0, (ROOM_MAX - origin) * inverse, (ROOM_MIN - origin) * inverse)
        exits = np.where(np.isfinite(exits), exits, np.inf)
        normal_axis = np.argmin(exits, axis=-1)
        depth = np.take_along_axis(exits, normal_axis[..., None], axis=-1)[..., 0]
        direction_sign = np.take_along_axis(rays, normal_axis[..., None], axis=-1)[..., 0] > 0
        surface = normal_axis * 2 + direction_sign.astype(np.int64)
        for box_id, (low, high) in enumerate(self.boxes):
            t_low = (low - origin) * inverse
            t_high = (high - origin) * inverse
            # 0 * inf (a ray parallel to a face, starting on its plane) must not block the hit.
            t_near = np.nan_to_num(np.minimum(t_low, t_high), nan=-np.inf, posinf=np.inf, neginf=-np.inf)
            t_far = np.nan_to_num(np.maximum(t_low, t_high), nan=np.inf, posinf=np.inf, neginf=-np.inf)
            t_far = t_far.min(axis=-1)
            entry_axis = np.argmax(t_near, axis=-1)
            entry = np.take_along_axis(t_near, entry_axis[..., None], axis=-1)[..., 0]
            hit = (entry <= t_far) & (entry > 1e-6) & (entry < depth)
            depth = np.where(hit, entry, depth)
            surface = np.where(hit, 6 + box_id, surface)
            normal_axis = np.where(hit, entry_axis, normal_axis)
        return depth, surface, normal_axis

    def _shade(self, points: np.ndarray, surface: np.ndarray, normal_axis: np.ndarray) -> np.ndarray:
        """Procedural albedo times a fixed directional shading per face orientation; [H, W, 3] in [0, 1]."""
        # Texture coordinates: the two world axes spanning the hit face.
        first = np.where(normal_axis == 0, points[..., 2], points[..., 0])
        second = np.where(normal_axis == 1, points[..., 2], points[..., 1])
        tiles = (np.floor(first / 0.5) + np.floor(second / 0.5)) % 2.0
        stripes = 0.5 + 0.5 * np.sin(first * 9.0 + 2.0 * np.sin(second * 3.0))
        detail = sum(weight * self._noise(first * frequency, second * frequency, octave)
                     for octave, (weight, frequency) in enumerate([(0.5, 1.5), (0.3, 6.0), (0.2, 24.0)]))
        is_floor = surface == 3
        is_box = surface >= 6
        pattern = np.where(is_floor, 0.6 * tiles + 0.4 * detail,
                           np.where(is_box, 0.35 * tiles + 0.65 * detail, 0.35 * stripes + 0.65 * detail))
        albedo = self._palette[surface] * (0.45 + 0.55 * pattern[..., None])
        shading = np.array([0.8, 1.0, 0.9])[normal_axis]
        return albedo * shading[..., None]

    def _noise(self, a: np.ndarray, b: np.ndarray, octave: int) -> np.ndarray:
        """Bilinearly interpolated hashed lattice noise in [0, 1] (value noise)."""
        cell_a = np.floor(a)
        cell_b = np.floor(b)
        frac_a = a - cell_a
        frac_b = b - cell_b
        # Smoothstep weights remove the grid's visible creases.
        wa = frac_a * frac_a * (3.0 - 2.0 * frac_a)
        wb = frac_b * frac_b * (3.0 - 2.0 * frac_b)
        ia = cell_a.astype(np.int64)
        ib = cell_b.astype(np.int64)

        def lattice(da: int, db: int) -> np.ndarray:
            h = ((ia + da) * 73856093) ^ ((ib + db) * 19349663) ^ ((self.seed * 4 + octave) * 83492791)
            h = (h ^ (h >> 13)) * 1274126177
            return ((h ^ (h >> 16)) & 0xFFFF) / 65535.0

        top = lattice(0, 0) * (1 - wa) + lattice(1, 0) * wa
        bottom = lattice(0, 1) * (1 - wa) + lattice(1, 1) * wa
        return top * (1 - wb) + bottom * wb


def trajectory_poses(num_frames: int, trajectory: str | Sequence[Segment] | None) -> np.ndarray:
    """[N, 4, 4] c2w poses of a named trajectory ('walkthrough') or a list of segments."""
    if trajectory is None or trajectory == "walkthrough":
        return walkthrough_poses(num_frames)
    if isinstance(trajectory, str):
        raise ValueError(f"unknown trajectory {trajectory!r}: use 'walkthrough' or a list of Segment")
    poses = segment_poses(trajectory)
    if len(poses) < num_frames:
        raise ValueError(f"the segments cover {len(poses)} frames, {num_frames} requested")
    return poses[:num_frames]
