"""The node's one TF input: ``/tf_static`` and ``/tf``, each heard on one subscription, every message given to
the TF tree (``tf_tree.py``: whose parent is whose) and then to the transform buffer (the mount and TF
odometry lookups).

One subscription per topic keeps the two in step: a transform the buffer can chain is already in the
tree, so a mount is never found before the tree knows the other parents heard with it. The buffer is
tf2_ros's where importable, filled as tf2_ros's own ``TransformListener`` fills it (``set_transform``,
``set_transform_static``, tf2's listener QoS); otherwise ``tf_buffer.py``'s, which keeps only the newest
transform of each frame. Without ``tf2_msgs`` nothing is heard. ``/tf`` is subscribed only when something
needs it (``NodeOptions.hears_tf``), from start-up or from the parameter change that makes it needed.
See docs/node.md, "What the node hears on TF".
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.subscription import Subscription
from rclpy.time import Time

from gct_stream_ros.ros import topics
from gct_stream_ros.ros.tf import TF_QOS, TF_STATIC_QOS, matrix_from_transform
from gct_stream_ros.ros.tf_buffer import TransformBuffer
from gct_stream_ros.ros.tf_tree import TfTree

AUTHORITY = "default_authority"
"""What tf2_ros's listener tells its buffer a transform came from (the sender is not known)."""


class Buffer(Protocol):
    """What the listener and the lookups use of tf2_ros's ``Buffer`` (``TransformBuffer`` has it too)."""

    def set_transform(self, transform: TransformStamped, authority: str) -> object: ...

    def set_transform_static(self, transform: TransformStamped, authority: str) -> object: ...

    def lookup_transform(self, target_frame: str, source_frame: str, time: Time) -> TransformStamped: ...


def transform_buffer() -> tuple[Buffer, str]:
    """tf2_ros's buffer (history, interpolation) where importable, else ``tf_buffer.py``'s; and its name."""
    try:
        from tf2_ros import Buffer as Tf2Buffer
    except ImportError:
        return TransformBuffer(), "tf_buffer"
    return Tf2Buffer(), "tf2_ros"


class TfListener:
    """Hears ``/tf_static`` (and ``/tf`` once asked to) for the TF tree and the transform buffer."""

    def __init__(self, node: Node, tree: TfTree, hear_tf: bool,
                 buffer: tuple[Buffer, str] | None = None) -> None:
        """``buffer``: the buffer and its name, ``transform_buffer()``'s by default."""
        self.tree = tree
        self._node = node
        self._tf: Subscription | None = None
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            self._message_type = None
            self.buffer, self.backend = None, "none"
            return
        self._message_type = TFMessage
        self.buffer, self.backend = buffer or transform_buffer()
        self._tf_static = node.create_subscription(TFMessage, topics.TF_STATIC, self._on_tf_static,
                                                   TF_STATIC_QOS)
        if hear_tf:
            self.hear_tf()

    @property
    def available(self) -> bool:
        """False without ``tf2_msgs``: nothing is heard and every lookup fails."""
        return self.buffer is not None

    @property
    def interpolates(self) -> bool:
        """True when lookups at a stamp interpolate the buffer's history (tf2_ros); ``tf_buffer.py``'s answers
        every stamp with the newest transforms."""
        return self.backend == "tf2_ros"

    @property
    def topics(self) -> tuple[str, ...]:
        """The TF topics heard, for the start-up log."""
        if not self.available:
            return ()
        return (topics.TF_STATIC, topics.TF) if self._tf is not None else (topics.TF_STATIC,)

    def hear_tf(self) -> None:
        """Subscribe to ``/tf`` as well (once; nothing without ``tf2_msgs``)."""
        if self._message_type is not None and self._tf is None:
            self._tf = self._node.create_subscription(self._message_type, topics.TF, self._on_tf, TF_QOS)

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int | None = None) -> np.ndarray | None:
        """4x4 ``source_frame`` coordinates into ``target_frame`` at ``stamp_ns`` (None: the latest), or None
        when TF does not know it (yet)."""
        if self.buffer is None:
            return None
        time = Time() if stamp_ns is None else Time(nanoseconds=stamp_ns)
        try:
            return matrix_from_transform(self.buffer.lookup_transform(target_frame, source_frame, time))
        except Exception:  # tf2's LookupException, ConnectivityException, ExtrapolationException...
            return None

    def _on_tf(self, message: object) -> None:
        # The tree first: a transform the buffer has is then always in the tree (see the module's doc).
        self.tree.add(_edges(message))
        for transform in message.transforms:
            self.buffer.set_transform(transform, AUTHORITY)

    def _on_tf_static(self, message: object) -> None:
        self.tree.add(_edges(message))
        for transform in message.transforms:
            self.buffer.set_transform_static(transform, AUTHORITY)


def _edges(message: object) -> list[tuple[str, str]]:
    return [(transform.header.frame_id, transform.child_frame_id) for transform in message.transforms]
