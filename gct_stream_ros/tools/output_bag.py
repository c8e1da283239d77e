"""Write already-serialized (CDR) messages into a rosbag2 directory that ``ros2 bag play`` replays.

CDR bytes from ``rclpy.serialization`` and from the ``rosbags`` typestore are interchangeable,
so callers serialize with whichever has the message type; ``tf2_msgs`` exists only in the
typestore, hence ``tf_message_cdr``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import TracebackType

from rosbags.interfaces import Qos
from rosbags.rosbag2 import StoragePlugin, Writer

from gct_stream_ros.ros.topics import TF_TYPE
from gct_stream_ros.tools.frame_source import TYPESTORE

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
TRANSFORM_TYPE = "geometry_msgs/msg/TransformStamped"
# The metadata layout written by Jazzy and Kilted's rosbag2.
BAG_VERSION = 9


def tf_message_cdr(transforms_cdr: list[bytes]) -> bytes:
    """A ``tf2_msgs/TFMessage`` holding the given serialized ``TransformStamped`` messages."""
    transforms = [TYPESTORE.deserialize_cdr(raw, TRANSFORM_TYPE) for raw in transforms_cdr]
    message = TYPESTORE.types[TF_TYPE](transforms=transforms)
    return bytes(TYPESTORE.serialize_cdr(message, TF_TYPE))


class OutputBag:
    """A rosbag2 directory opened for writing; topics are added on their first message.

    A topic's ``qos`` is recorded as its offered QoS, so ``ros2 bag play`` republishes it as the
    node publishes it (a latched map stays latched for late subscribers such as RViz).
    """

    def __init__(self, path: Path, storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage {storage!r} is not one of {', '.join(STORAGES)}")
        self.path = path
        self._writer = Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        self._writer.open()
        self._connections: dict[str, object] = {}
        self.counts: Counter[str] = Counter()

    def write(self, topic: str, msgtype: str, stamp_ns: int, cdr: bytes, qos: Qos | None = None) -> None:
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=TYPESTORE,
                                                     offered_qos_profiles=[qos] if qos else ())
            self._connections[topic] = connection
        elif connection.msgtype != msgtype:
            raise ValueError(f"topic {topic} already holds {connection.msgtype}, not {msgtype}")
        self._writer.write(connection, stamp_ns, cdr)
        self.counts[topic] += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> OutputBag:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
