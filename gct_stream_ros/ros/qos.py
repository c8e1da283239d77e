"""QoS of the node's topics: inputs as sensor data by default (matches reliable and best-effort cameras,
REP-2003), per-frame outputs reliable by default (what RViz expects), the map reliable and latched."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)

OUTPUT_DEPTH = 5
"""Per-frame outputs are large; a slow subscriber should get recent frames, not a long backlog."""


def input_qos(name: str, every_frame: bool = False) -> QoSProfile:
    """The subscription profile for ``input.qos``.

    ``every_frame`` (``queue.policy: all``): keep all samples in the reader's history. With a
    bounded history, samples that arrive while the executor is busy (the model thread holds the
    GIL) overwrite older ones before the callback takes them, even from a reliable publisher.
    """
    profiles = {
        "sensor_data": qos_profile_sensor_data,
        "reliable": QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
        "best_effort": QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT),
        "system_default": qos_profile_system_default,
    }
    profile = profiles[name]
    if not every_frame:
        return profile
    return QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=profile.reliability,
                      durability=profile.durability)


def output_qos(reliability: str) -> QoSProfile:
    """The profile of the per-frame outputs for ``output.qos`` ('reliable' or 'best_effort')."""
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(depth=OUTPUT_DEPTH, reliability=policy)


def map_qos() -> QoSProfile:
    """Latched: a subscriber that comes late (RViz started after the node) still gets the last map."""
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
