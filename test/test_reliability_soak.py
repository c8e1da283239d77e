"""Long runs: the node on the real engine (tiny preset, 28 px model input) keeps host memory, the KV cache,
the path and the fused map within their bounds.

1,000 frames run in the CPU suite (about 20 s); ``make soak`` (``GCT_SOAK=1 pytest -m soak``) runs 10,000.
Frames go straight into the node's worker (what the image callback does after decoding and preparing)
while the test spins the executor, so every output is published and received by a subscriber.

Host memory: RSS after the run is compared with RSS after a warm-up (allocator pools, the map and the
path filled up, the cache at its bound). Allowed growth: what is meant to grow, the ``save_map`` trajectory
(``POSE_BYTES`` per frame), plus ``RSS_SLACK_MIB`` for allocator noise (measured: under 1.5 MiB). Keeping
one frame's results by mistake would cost about 16 kB per frame at this size, 12 MiB over 800 frames.
"""

from __future__ import annotations

import functools
import gc
import os
import time

import pytest
import torch
from ros_fixtures import RosHarness

pytestmark = pytest.mark.ros

from nav_msgs.msg import Odometry, Path  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2  # noqa: E402

from gct_stream_ros.ros import messages, topics  # noqa: E402
from gct_stream_ros.ros.camera_input import CameraFrame  # noqa: E402
from gct_stream_ros.ros.node import GctStreamNode  # noqa: E402
from gct_stream_ros.stream.synthetic import SyntheticScene  # noqa: E402

MIB = 2**20
RSS_SLACK_MIB = 3.0
POSE_BYTES = 344
"""One trajectory entry (sys.getsizeof): a tuple, an int stamp and a 4x4 float64 array."""
CACHE_MAX_FRAMES = 8
PATH_LENGTH = 50
MAP_POINTS = 2_000
SETTINGS = {"model.image_width": 28, "model.num_scale_frames": 2, "window.overlap": 1,
            "model.camera_iterations": 1, "cache.sliding_window": 2, "cache.max_frames": CACHE_MAX_FRAMES,
            "queue.policy": "all", "output.path.max_length": PATH_LENGTH, "output.map.max_points": MAP_POINTS,
            "output.map.voxel_size": 0.001, "output.map.period": 0.5, "diagnostics.period": 0.5}
BATCH = 25
"""Frames submitted at once (the 'all' queue keeps them): the executor spins between batches."""
SPINS_PER_BATCH = 40
PATCHES_PER_FRAME = 4
"""28x28 model image, 14 px patches."""
SCENE = SyntheticScene(seed=5).render_sequence(24, 28, 21)
"""Played forwards and backwards again and again: an endless camera sweep at tiny cost."""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _frame(index: int) -> CameraFrame:
    lap, position = divmod(index, len(SCENE))
    image = SCENE[position if lap % 2 == 0 else len(SCENE) - 1 - position].image
    return CameraFrame(image, 1_000_000_000 + index * 33_333_333, "soak_camera")


def _run(total: int, warm_up: int, domain_id: int) -> None:
    threads = torch.get_num_threads()
    # One thread: on tiny tensors a second one only spin-waits, and on a shared machine that costs 10x.
    torch.set_num_threads(1)
    ros = RosHarness(domain_id=domain_id)
    node = ros.add_node(functools.partial(GctStreamNode, "gct_soak"), SETTINGS)
    latest: dict[str, object] = {}
    """Stamp of the last message received per topic (the subscribers keep only a few: no pile-up)."""
    try:
        for topic, kind in (("/depth/image", Image), ("/points", PointCloud2), ("/odometry", Odometry),
                            ("/path", Path), ("/map/points", PointCloud2)):
            ros.probe.create_subscription(kind, topic, functools.partial(_keep_stamp, latest, topic), 10)
        points_publisher = node.outputs[topics.POINTS]
        ros.wait_for(lambda: points_publisher.get_subscription_count() > 0, 10.0, "subscribers matched")
        warm_rss = warm_cache = None
        for start in range(0, total, BATCH):
            for index in range(start, start + BATCH):
                frame = _frame(index)
                frame.prepared = node._session.prepare(frame.image)  # as the image callback does
                node.worker.submit(frame)
            _wait_for_worker(node, start + BATCH)
            _spin_a_little(ros)
            if start + BATCH == warm_up:
                gc.collect()
                warm_rss, warm_cache = _rss_bytes(), node._session.stats().cache
        gc.collect()
        final_rss, stats = _rss_bytes(), node._session.stats()
        print(f"\nRSS after {warm_up} frames {warm_rss / MIB:.1f} MiB, after {total} frames "
              f"{final_rss / MIB:.1f} MiB (+{(final_rss - warm_rss) / MIB:.2f} MiB)")

        assert node.diagnostics.errors == 0 and node.diagnostics.processed == total
        assert final_rss - warm_rss < RSS_SLACK_MIB * MIB + POSE_BYTES * (total - warm_up)
        cache = stats.cache
        assert cache.frames_stored - cache.specials_dropped <= CACHE_MAX_FRAMES < cache.frames_stored
        special_tokens = node._session.network.cache.num_special_tokens
        assert cache.tokens_max <= CACHE_MAX_FRAMES * (PATCHES_PER_FRAME + special_tokens)
        assert (cache.tokens_per_layer, cache.bytes_allocated) == (warm_cache.tokens_per_layer,
                                                                 warm_cache.bytes_allocated)
        assert node.map_state.path_length == PATH_LENGTH and 0 < len(node.map_state) <= MAP_POINTS
        assert len(node.map_state.trajectory()) == total  # save_map keeps every pose (up to TRAJECTORY_LIMIT)
        last_stamp = messages.to_time(_frame(total - 1).stamp_ns)
        ros.wait_for(lambda: latest.get("/odometry") == last_stamp, 10.0, "the last frame's odometry")
        assert latest.keys() == {"/depth/image", "/points", "/odometry", "/path", "/map/points"}
    finally:
        ros.close()
        torch.set_num_threads(threads)


def _wait_for_worker(node: GctStreamNode, processed: int, timeout_s: float = 30.0) -> None:
    """Sleep, not spin, while the worker (and its publisher) run: a spinning executor would contend for the
    GIL and slow them."""
    deadline = time.monotonic() + timeout_s
    while node.worker.processed < processed or not node.idle:
        assert time.monotonic() < deadline, f"the worker did not get to frame {processed}"
        time.sleep(0.005)


def _spin_a_little(ros: RosHarness) -> None:
    """Deliver what is waiting: outputs to the counting subscribers, the node's map and diagnostics timer."""
    for _ in range(SPINS_PER_BATCH):
        ros.executor.spin_once(timeout_sec=0.0)


def _keep_stamp(latest: dict[str, object], topic: str, message: object) -> None:
    latest[topic] = message.header.stamp


def test_a_thousand_frames_keep_memory_cache_path_and_map_bounded():
    _run(total=1_000, warm_up=200, domain_id=184)


@pytest.mark.soak
@pytest.mark.skipif(os.environ.get("GCT_SOAK") != "1", reason="long soak: run with `make soak` (GCT_SOAK=1)")
def test_ten_thousand_frames_keep_memory_cache_path_and_map_bounded():
    _run(total=10_000, warm_up=1_000, domain_id=185)
