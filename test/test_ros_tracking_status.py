"""The tracking status: state, level and the numbers, as DiagnosticStatus key values."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from gct_stream_ros.ros.tracking_status import TrackingState, TrackingStatus  # noqa: E402


def _status(state: TrackingState, reason: str = "") -> TrackingStatus:
    return TrackingStatus(state=state, reason=reason, stamp_ns=42, step_ms=12.34, latency_ms=20.0,
                          frames_dropped=3, keyframes=7, cached_tokens=1234, gpu_memory_bytes=3 * 2 ** 20,
                          sequence=1)


def test_the_numbers_are_key_values():
    message = _status(TrackingState.TRACKING).message("gct: tracking", "cuda:0")
    values = {kv.key: kv.value for kv in message.values}
    assert values == {"state": "tracking", "stamp [ns]": "42", "step [ms]": "12.3",
                      "input to output latency [ms]": "20.0", "frames dropped": "3", "keyframes": "7",
                      "cached tokens": "1234", "GPU memory [MB]": "3.0", "sequence": "1"}
    assert (message.name, message.hardware_id, message.message) == ("gct: tracking", "cuda:0", "tracking")


@pytest.mark.parametrize(("state", "level"), [
    (TrackingState.TRACKING, DiagnosticStatus.OK), (TrackingState.INITIALISING, DiagnosticStatus.WARN),
    (TrackingState.RESET, DiagnosticStatus.WARN), (TrackingState.LOST, DiagnosticStatus.ERROR)])
def test_the_level_follows_the_state(state, level):
    message = _status(state, "why").message("n")
    assert message.level == level and message.message == f"{state.value}: why"
