"""The node's output topics (relative names) and their message types, for the tools that write or record them.

``test_config.py`` checks this table against the publishers ``ros/node.py`` creates.
"""

from __future__ import annotations

DEPTH = "depth/image"
CAMERA_INFO = "depth/camera_info"
CONFIDENCE = "depth/confidence"
POINTS = "points"
ODOMETRY = "odometry"
PATH = "path"
MAP = "map/points"
TF = "/tf"

OUTPUT_TYPES = {
    DEPTH: "sensor_msgs/msg/Image",
    CAMERA_INFO: "sensor_msgs/msg/CameraInfo",
    CONFIDENCE: "sensor_msgs/msg/Image",
    POINTS: "sensor_msgs/msg/PointCloud2",
    ODOMETRY: "nav_msgs/msg/Odometry",
    PATH: "nav_msgs/msg/Path",
    MAP: "sensor_msgs/msg/PointCloud2",
}
"""Per-frame outputs and the map; ``/tf`` (``tf2_msgs/msg/TFMessage``) comes on top."""
