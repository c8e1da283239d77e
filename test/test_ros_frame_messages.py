"""The messages of a fixed stream of results, pinned byte for byte: the writer's speed-ups (fused map rows
kept in place, the cloud's pixels selected once for map and cloud; benchmarks/README.md, "Node overhead")
change no message.

The CDR bytes of rclpy leave the alignment padding uninitialised, so each message is compared in the
canonical CDR of the rosbags typestore (the same fields and values, zero padding)."""

from __future__ import annotations

import hashlib

import pytest
from ros_fixtures import TINY, fake_result, random_image

pytestmark = pytest.mark.ros

from rclpy.serialization import serialize_message  # noqa: E402

from gct_stream_ros.ros import topics  # noqa: E402
from gct_stream_ros.ros.frame_messages import frame_messages, map_message  # noqa: E402
from gct_stream_ros.ros.map_state import MapState  # noqa: E402
from gct_stream_ros.ros.odom_frame import OdomFrame  # noqa: E402
from gct_stream_ros.ros.options import NodeOptions  # noqa: E402
from gct_stream_ros.ros.world_frame import WorldFrame  # noqa: E402
from gct_stream_ros.settings import resolve  # noqa: E402
from gct_stream_ros.tools.frame_source import TYPESTORE  # noqa: E402
from gct_stream_ros.tools.offline import ros_type_name  # noqa: E402

FRAMES = 8
MAP_VOXELS = 150
"""Fewer than the frames' clouds fill: the later keyframes evict."""
START_NS = 1_700_000_000_000_000_000
PINNED = {
    # sha256 of the canonical CDR of every message of a topic, in order; computed once with the code
    # before the speed-ups (commit 5ace7c0)
    "camera": "7401d11c3c0963c889f4eda7a25d51d1962be8927ba463ea27e180d389c0fa38",
    "map": "8dc8a2f233b2f7e700d5302c9068c34dbeb017b53934b648deed5f9609089904",
}


def _canonical(message: object) -> bytes:
    name = ros_type_name(message)
    return bytes(TYPESTORE.serialize_cdr(TYPESTORE.deserialize_cdr(serialize_message(message), name), name))


def _stream_digests(points_frame: str) -> tuple[dict[str, str], dict[str, int], int]:
    """Digest and message count per topic of ``FRAMES`` keyframes (the camera moving 0.1 a frame, a map
    small enough to evict), then the fused map."""
    options = NodeOptions.from_values(resolve({**TINY, "output.points.frame": points_frame,
                                               "output.points.decimation": 2, "output.map.voxel_size": 0.05,
                                               "output.map.max_points": MAP_VOXELS}))
    map_state = MapState(options.output.map_voxel_size, options.output.map_max_points,
                         options.output.path_max_length)
    world, odom = WorldFrame(), OdomFrame()
    digests: dict[str, hashlib._Hash] = {}
    counts: dict[str, int] = {}

    def record(topic: str, message: object) -> None:
        digests.setdefault(topic, hashlib.sha256()).update(_canonical(message))
        counts[topic] = counts.get(topic, 0) + 1

    for index in range(FRAMES):
        result = fake_result(index, START_NS + index * 33_333_333, random_image(20, 14, seed=index))
        built = frame_messages(result, "cam", world, odom, options, map_state)
        for transform in built.transforms:
            record(topics.TF, transform)
        for topic, message in built.outputs:
            record(topic, message)
    record(*map_message(*map_state.points(), START_NS, options))
    return {topic: digest.hexdigest() for topic, digest in digests.items()}, counts, len(map_state)


@pytest.mark.parametrize("points_frame", ["camera", "map"])
def test_messages_of_a_fixed_stream_are_those_pinned(points_frame):
    digests, counts, voxels = _stream_digests(points_frame)
    assert counts[topics.MAP] == 1 and voxels == MAP_VOXELS
    assert all(counts[topic] == FRAMES for topic in (topics.DEPTH, topics.CONFIDENCE, topics.CAMERA_INFO,
                                                     topics.POINTS, topics.ODOMETRY, topics.PATH))
    whole = hashlib.sha256("".join(digests[topic] for topic in sorted(digests)).encode()).hexdigest()
    assert whole == PINNED[points_frame]
