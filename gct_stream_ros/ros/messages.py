"""Pure conversions of engine results into ROS messages; the node publishes them, the offline tool writes
them into bags.

Depth follows REP-118 (32FC1 with NaN for invalid, or 16UC1 scaled by 1000 with 0 for invalid);
clouds are x, y, z FLOAT32 plus ``rgb`` packed in a FLOAT32 (point_step 16), unorganised and
dense (invalid and low-confidence points are left out). All work is vectorised NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped, Transform, TransformStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from gct_stream_ros.mapping.quaternion import quaternion_from_matrix
from gct_stream_ros.stamps import join_stamp, split_stamp
from gct_stream_ros.stream.points import depth_to_world_points, transform_points
from gct_stream_ros.stream.result import FrameResult

DEPTH_ENCODINGS = ("32FC1", "16UC1")
DEPTH_16UC1_SCALE = 1000.0
"""16UC1 depth stores depth x 1000 (millimetres when the estimate is metric), as OpenNI drivers do."""
CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
CLOUD_FIELDS = ("x", "y", "z", "rgb")
BUILT_TYPES = (CameraInfo, Image, Odometry, Path, PointCloud2, TransformStamped)
"""The message types these conversions build for publishing and bag writing."""


def to_time(stamp_ns: int) -> Time:
    seconds, nanoseconds = split_stamp(stamp_ns)
    return Time(sec=seconds, nanosec=nanoseconds)


def to_nanoseconds(stamp: Time) -> int:
    return join_stamp(stamp.sec, stamp.nanosec)


def header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=to_time(stamp_ns), frame_id=frame_id)


def _image(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Image:
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    message = Image(header=header(stamp_ns, frame_id), height=height, width=width, encoding=encoding,
                    is_bigendian=0, step=width * array.itemsize * (array.shape[2] if array.ndim == 3 else 1))
    message.data = array.tobytes()
    return message


def depth_image(result: FrameResult, frame_id: str, encoding: str = "32FC1") -> Image:
    """The depth map at model resolution, stamped with the input image's stamp."""
    depth = np.asarray(result.depth, dtype=np.float32)
    invalid = ~np.isfinite(depth) | (depth <= 0)
    if encoding == "32FC1":
        return _image(np.where(invalid, np.float32(np.nan), depth).astype("<f4"), encoding, result.stamp_ns,
                      frame_id)
    if encoding == "16UC1":
        scaled = np.round(np.where(invalid, 0.0, depth) * DEPTH_16UC1_SCALE)
        # Depth beyond the 16-bit range cannot be represented: mark it invalid rather than clip it.
        scaled[scaled > np.iinfo(np.uint16).max] = 0
        return _image(scaled.astype("<u2"), encoding, result.stamp_ns, frame_id)
    raise ValueError(f"depth encoding {encoding!r} is not one of {', '.join(DEPTH_ENCODINGS)}")


def confidence_image(result: FrameResult, frame_id: str) -> Image:
    """The depth confidence (32FC1, > 1, higher is better) at model resolution."""
    return _image(np.asarray(result.depth_conf, dtype="<f4"), "32FC1", result.stamp_ns, frame_id)


def camera_info(result: FrameResult, frame_id: str) -> CameraInfo:
    """The estimated pinhole intrinsics at the depth image's resolution (no distortion)."""
    height, width = result.depth.shape
    k = np.asarray(result.intrinsics, dtype=np.float64)
    projection = np.zeros((3, 4))
    projection[:, :3] = k
    message = CameraInfo(header=header(result.stamp_ns, frame_id), height=height, width=width,
                         distortion_model="plumb_bob")
    message.d = [0.0] * 5
    message.k = k.reshape(-1)
    message.r = np.eye(3).reshape(-1)
    message.p = projection.reshape(-1)
    return message


def session_points(result: FrameResult) -> tuple[np.ndarray, np.ndarray]:
    """``(points [H, W, 3], confidence [H, W])`` in the session world: the engine's own points, or the depth
    back-projected through the pose when the engine gave none."""
    if result.world_points is not None:
        confidence = result.depth_conf if result.world_points_conf is None else result.world_points_conf
        return np.asarray(result.world_points), np.asarray(confidence)
    depth = np.asarray(result.depth, dtype=np.float32)
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan)  # invalid depth gives no point
    points = depth_to_world_points(depth, result.pose_c2w, result.intrinsics, np.float32)
    return points, np.asarray(result.depth_conf)


def cloud_points(result: FrameResult, output_from_session: np.ndarray, decimation: int = 1,
                 min_confidence: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz [N, 3] float32, rgb [N, 3] uint8)``: the ``selected_points``, transformed by
    ``output_from_session`` (4x4)."""
    return transformed(selected_points(result, decimation, min_confidence), output_from_session)


def transformed(selected: tuple[np.ndarray, np.ndarray],
                output_from_session: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``selected_points`` -> ``cloud_points`` in the frame of ``output_from_session``."""
    xyz, rgb = selected
    # float32 like the message: world coordinates of a map need no more than its 7 digits
    return transform_points(xyz, output_from_session, np.float32), rgb


def selected_points(result: FrameResult, decimation: int = 1,
                    min_confidence: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz [N, 3] in the session world, rgb [N, 3] uint8)``: every ``decimation``-th pixel in both
    directions whose point is finite and confidence >= ``min_confidence``."""
    points, confidence = session_points(result)
    rows = slice(None, None, max(1, int(decimation)))
    xyz = points[rows, rows].reshape(-1, 3)
    rgb = np.asarray(result.image)[rows, rows].reshape(-1, 3)
    keep = confidence[rows, rows].reshape(-1) >= min_confidence
    finite = np.isfinite(xyz)
    if not finite.all():
        keep &= finite.all(axis=1)
    if not keep.all():  # boolean indexing copies every point: skip it in the usual all-valid case
        xyz, rgb = xyz[keep], rgb[keep]
    return xyz, np.ascontiguousarray(rgb, dtype=np.uint8)


def point_cloud(xyz: np.ndarray, rgb: np.ndarray, stamp_ns: int, frame_id: str) -> PointCloud2:
    """An unorganised, dense ``PointCloud2`` with fields x, y, z, rgb (FLOAT32 each, point_step 16)."""
    points = np.empty(len(xyz), dtype=CLOUD_DTYPE)
    for axis, name in enumerate("xyz"):
        points[name] = xyz[:, axis]
    rgb = np.asarray(rgb, dtype=np.uint32)
    points["rgb"] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    fields = [PointField(name=name, offset=CLOUD_DTYPE.fields[name][1], datatype=PointField.FLOAT32, count=1)
              for name in CLOUD_FIELDS]
    message = PointCloud2(header=header(stamp_ns, frame_id), height=1, width=len(points), fields=fields,
                          is_bigendian=False, point_step=CLOUD_DTYPE.itemsize,
                          row_step=CLOUD_DTYPE.itemsize * len(points), is_dense=True)
    message.data = points.tobytes()
    return message


def unpack_point_cloud(message: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz [N, 3] float32, rgb [N, 3] uint8)`` of a cloud made by ``point_cloud``."""
    names = [field.name for field in message.fields]
    if names != list(CLOUD_FIELDS) or message.point_step != CLOUD_DTYPE.itemsize:
        raise ValueError(f"expected fields {CLOUD_FIELDS} with point_step 16, got {names} "
                         f"with point_step {message.point_step}")
    points = np.frombuffer(bytes(message.data), dtype=CLOUD_DTYPE)
    xyz = np.stack([points[name] for name in "xyz"], axis=1)
    rgb = np.stack([(points["rgb"] >> shift) & 0xFF for shift in (16, 8, 0)], axis=1).astype(np.uint8)
    return xyz, rgb


def pose(matrix: np.ndarray) -> Pose:
    """The ``Pose`` of a 4x4 transform, with a unit quaternion."""
    message = Pose()
    message.position.x, message.position.y, message.position.z = (float(c) for c in matrix[:3, 3])
    orientation = message.orientation
    orientation.x, orientation.y, orientation.z, orientation.w = (float(c) for c in
                                                                  quaternion_from_matrix(matrix[:3, :3]))
    return message


def pose_stamped(matrix: np.ndarray, stamp_ns: int, frame_id: str) -> PoseStamped:
    return PoseStamped(header=header(stamp_ns, frame_id), pose=pose(matrix))


def odometry(matrix: np.ndarray, stamp_ns: int, frame_id: str, child_frame_id: str,
             pose_covariance: Sequence[float] = (), linear: Sequence[float] = (0.0, 0.0, 0.0),
             angular: Sequence[float] = (0.0, 0.0, 0.0), twist_covariance: Sequence[float] = ()) -> Odometry:
    """The pose in ``frame_id``, the twist (``linear``, ``angular``) in ``child_frame_id``; each covariance is
    a row-major 6x6 (left zero when empty)."""
    message = Odometry(header=header(stamp_ns, frame_id), child_frame_id=child_frame_id)
    message.pose.pose = pose(matrix)
    twist = message.twist.twist
    twist.linear.x, twist.linear.y, twist.linear.z = (float(v) for v in linear)
    twist.angular.x, twist.angular.y, twist.angular.z = (float(v) for v in angular)
    if len(pose_covariance):
        message.pose.covariance = np.asarray(pose_covariance, dtype=np.float64)
    if len(twist_covariance):
        message.twist.covariance = np.asarray(twist_covariance, dtype=np.float64)
    return message


def transform_stamped(matrix: np.ndarray, stamp_ns: int, parent: str, child: str) -> TransformStamped:
    """``parent -> child`` where ``matrix`` maps child coordinates into the parent frame."""
    placed = pose(matrix)
    transform = Transform()
    transform.translation.x, transform.translation.y, transform.translation.z = (
        placed.position.x, placed.position.y, placed.position.z)
    transform.rotation = placed.orientation
    return TransformStamped(header=header(stamp_ns, parent), child_frame_id=child, transform=transform)


def path(poses: Sequence[PoseStamped], stamp_ns: int, frame_id: str) -> Path:
    return Path(header=header(stamp_ns, frame_id), poses=list(poses))
