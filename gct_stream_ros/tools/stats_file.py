"""The offline tool's ``--stats`` file: one JSON object per input frame, in input order."""

from __future__ import annotations

import json
from typing import TextIO

from gct_stream_ros.cache.base import CacheStats
from gct_stream_ros.stamps import NS_PER_S
from gct_stream_ros.stream.result import FrameResult


def stats_record(result: FrameResult, cache: CacheStats, step_ms: float) -> dict[str, object]:
    """What the stats file says about a newly estimated frame.

    ``cached_tokens`` is the largest number of tokens a global layer sees after this frame and
    ``cached_bytes`` the K/V storage the cache holds (allocated, not only occupied),
    ``camera_cached_bytes`` that of the camera head's own cache.
    """
    return {
        "index": result.index,
        "stamp": result.stamp_ns / NS_PER_S,
        "keyframe": result.keyframe,
        "frame_type": result.frame_type.name.lower(),
        "window": result.window,
        "cached_tokens": cache.tokens_max,
        "cached_bytes": cache.bytes_allocated,
        "camera_cached_bytes": cache.camera_head_bytes,
        "step_ms": round(step_ms, 3),
    }


def append_record(stream: TextIO, record: dict[str, object]) -> None:
    """One line, flushed at once so a long run can be watched with ``tail -f``."""
    stream.write(json.dumps(record) + "\n")
    stream.flush()
