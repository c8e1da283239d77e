"""gct_stream_ros: streaming GCT (lingbot-map) 3D reconstruction for ROS 2."""

__version__ = "0.1.0"
