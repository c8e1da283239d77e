"""Revisions are applied: each frame leaves once, with the estimate of the latest window."""

from __future__ import annotations

import numpy as np
import pytest

from gct_stream_ros.stream.result import FrameResult, FrameType
from gct_stream_ros.tools.final_estimates import FinalEstimates, LateRevisionError


def _result(index: int, window: int = 0, revision: bool = False, sequence: int = 0) -> FrameResult:
    pose = np.eye(4)
    pose[0, 3] = index + 100 * window
    return FrameResult(index=index, stamp_ns=index * 10, pose_c2w=pose, intrinsics=np.eye(3),
                       intrinsics_input=np.eye(3), depth=np.ones((2, 2), np.float32),
                       depth_conf=np.ones((2, 2), np.float32), image=np.zeros((2, 2, 3), np.uint8),
                       frame_type=FrameType.KEYFRAME, window=window, revision=revision, sequence=sequence)


def test_without_windows_every_estimate_is_final_at_once():
    estimates = FinalEstimates(windowed=False)
    assert [r.index for r in estimates.add([_result(1), _result(0)])] == [0, 1]
    assert estimates.pending == 0 and estimates.finish() == []


def test_estimates_wait_until_the_next_window_starts():
    estimates = FinalEstimates(windowed=True)
    assert estimates.add([_result(i) for i in range(4)]) == []
    assert estimates.add([_result(4)]) == []
    assert estimates.pending == 5


def test_revisions_replace_the_held_estimate_and_stay_until_their_window_is_done():
    estimates = FinalEstimates(windowed=True)
    estimates.add([_result(i) for i in range(5)])
    # Window 1 starts: it re-estimates frames 3 and 4 and adds frame 5.
    final = estimates.add([_result(3, 1, True), _result(4, 1, True), _result(5, 1)])
    assert [(r.index, r.window) for r in final] == [(0, 0), (1, 0), (2, 0)]
    assert estimates.revisions_applied == 2
    final = estimates.add([_result(6, 2)])
    assert [(r.index, r.window, r.revision) for r in final] == [(3, 1, True), (4, 1, True), (5, 1, False)]
    assert [(r.index, r.pose_c2w[0, 3]) for r in estimates.finish()] == [(6, 206.0)]


def test_a_revision_of_a_final_frame_is_an_error():
    estimates = FinalEstimates(windowed=True)
    estimates.add([_result(0), _result(1, 1)])
    with pytest.raises(LateRevisionError, match="frame 0"):
        estimates.add([_result(0, 1, True)])


def test_a_new_sequence_ends_the_windows_of_the_previous_one():
    estimates = FinalEstimates(windowed=True)
    estimates.add([_result(0), _result(1, 1)])
    final = estimates.add([_result(2, 0, sequence=1)])
    assert [(r.index, r.window, r.sequence) for r in final] == [(1, 1, 0)]
