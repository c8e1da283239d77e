"""The node's topic names (relative, resolved in the node's namespace) and their message types: the node
creates its publishers from this table; the offline tool, the demo and ``gct_stream_echo`` read it."""

from __future__ import annotations

import importlib

IMAGE = "image"
COMPRESSED_IMAGE = "image/compressed"
CAMERA_INFO_INPUT = "camera_info"
SCALE_ODOMETRY = "scale/odometry"
"""``nav_msgs/Odometry`` of the robot, for ``scale.source: odometry`` with ``scale.odometry.input: topic``."""
SCALE_DEPTH = "scale/depth"
"""Metric depth registered to the colour image, for ``scale.source: depth``."""

DEPTH = "depth/image"
CAMERA_INFO = "depth/camera_info"
CONFIDENCE = "depth/confidence"
POINTS = "points"
ODOMETRY = "odometry"
PATH = "path"
MAP = "map/points"
TF = "/tf"
TF_STATIC = "/tf_static"
"""Heard, with ``TF``, by the node's one TF listener (``tf_listener.py``), which feeds the TF tree the node
checks its transforms against and the buffer of its lookups; the node publishes nothing there."""
DIAGNOSTICS = "/diagnostics"
STATUS = "status"
"""``diagnostic_msgs/msg/DiagnosticStatus`` once per processed frame (``tracking_status.py``)."""

RESET_SERVICE = "reset"
SAVE_MAP_SERVICE = "save_map"

FRAME_OUTPUTS = {
    DEPTH: "sensor_msgs/msg/Image",
    CAMERA_INFO: "sensor_msgs/msg/CameraInfo",
    CONFIDENCE: "sensor_msgs/msg/Image",
    POINTS: "sensor_msgs/msg/PointCloud2",
    ODOMETRY: "nav_msgs/msg/Odometry",
    PATH: "nav_msgs/msg/Path",
}
"""Published once per processed frame (revisions republish all but the path)."""
OUTPUT_TYPES = {**FRAME_OUTPUTS, MAP: "sensor_msgs/msg/PointCloud2"}
"""Per-frame outputs and the map; ``/tf`` (``tf2_msgs/msg/TFMessage``) comes on top."""
TF_TYPE = "tf2_msgs/msg/TFMessage"


def absolute(topic: str) -> str:
    """The topic in the root namespace (how bags and the tools name it)."""
    return topic if topic.startswith("/") else f"/{topic}"


def message_class(msgtype: str) -> type:
    """The rclpy class of ``pkg/msg/Name`` (imported on demand: this table itself needs no ROS)."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)
