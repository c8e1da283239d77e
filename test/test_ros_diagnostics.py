"""The diagnostics report: rates over the last period, counters, engine values, the no-data warning."""

from __future__ import annotations

import pytest
from ros_fixtures import FakeSession, random_image

pytestmark = pytest.mark.ros

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from gct_stream_ros.ros.diagnostics import StreamDiagnostics, session_values  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _values(report) -> dict[str, str]:
    return {kv.key: kv.value for kv in report.status[0].values}


def test_rates_are_measured_since_the_previous_report():
    clock = Clock()
    diagnostics = StreamDiagnostics("node: stream", ["/cam/image"], clock=clock)
    for _ in range(10):
        diagnostics.image_received()
    diagnostics.processed += 4
    diagnostics.dropped, diagnostics.rejected = 6, 1
    clock.now += 2.0
    first = diagnostics.report(Time(sec=5), no_data_timeout_s=5.0, max_drop_rate=0.8,
                               extra={"map points": "7"}, hardware_id="cpu")
    values = _values(first)
    assert (values["input rate [Hz]"], values["processed rate [Hz]"]) == ("5.00", "2.00")
    assert (values["frames dropped"], values["messages rejected"], values["map points"]) == ("6", "1", "7")
    assert first.status[0].level == DiagnosticStatus.OK and first.header.stamp.sec == 5
    assert (first.status[0].name, first.status[0].hardware_id) == ("node: stream", "cpu")
    clock.now += 1.0
    diagnostics.image_received()
    assert _values(diagnostics.report(Time(), 5.0, 0.5))["input rate [Hz]"] == "1.00"


def test_silence_longer_than_the_timeout_warns_with_the_topics():
    clock = Clock()
    diagnostics = StreamDiagnostics("node: stream", ["/a/image", "/a/camera_info"], clock=clock)
    clock.now += 4.0
    assert diagnostics.report(Time(), 5.0, 0.5).status[0].level == DiagnosticStatus.OK
    clock.now += 2.0
    status = diagnostics.report(Time(), 5.0, 0.5).status[0]
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "no image received for 6.0 s on /a/image, /a/camera_info"
    diagnostics.image_received()
    assert diagnostics.report(Time(), 5.0, 0.5).status[0].level == DiagnosticStatus.OK


def test_engine_values_come_from_the_session_stats():
    session = FakeSession(num_scale_frames=1)
    for stamp in range(3):
        session.push(random_image(), stamp)
    values = session_values(session.stats())
    assert values["model step max [ms]"] == "3.0" and values["model step mean [ms]"] == "2.0"
    cache = (values["keyframes"], values["cache tokens per layer"], values["cache bytes"],
             values["camera-head cache bytes"])
    assert cache == ("3", "30", "4096", "512")
    assert values["device"] == "cpu (float32)" and values["frames dropped at resets"] == "0"


def test_a_drop_rate_above_the_limit_warns_with_the_numbers():
    clock = Clock()
    diagnostics = StreamDiagnostics("node: stream", ["/cam/image"], clock=clock)
    for _ in range(10):
        diagnostics.image_received()
    diagnostics.dropped, diagnostics.rejected = 5, 1
    status = diagnostics.report(Time(), 5.0, 0.5).status[0]
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "6 of 10 images dropped or rejected since the last report (60%, more than 50%)"
    for _ in range(10):
        diagnostics.image_received()
    diagnostics.dropped += 5
    assert diagnostics.report(Time(), 5.0, 0.5).status[0].level == DiagnosticStatus.OK


def test_a_lasting_warning_is_logged_when_it_starts_then_once_a_minute_and_when_it_ends():
    clock = Clock()
    diagnostics = StreamDiagnostics("node: stream", ["/cam/image"], clock=clock)
    logged = []
    for _ in range(130):  # a camera off for 130 s, a report every second
        clock.now += 1.0
        diagnostics.report(Time(), 5.0, 0.5)
        if diagnostics.log_line:
            logged.append((clock.now - 100.0, diagnostics.log_line))
    warned = [(t, DiagnosticStatus.WARN) for t in (5.0, 65.0, 125.0)]
    assert [(t, level) for t, (level, _) in logged] == warned
    assert logged[0][1][1] == "no image received for 5.0 s on /cam/image"
    diagnostics.image_received()
    clock.now += 1.0
    diagnostics.report(Time(), 5.0, 0.5)
    was = "no image received for 130.0 s on /cam/image"
    assert diagnostics.log_line == (DiagnosticStatus.OK, f"streaming normally again (was: {was})")
    clock.now += 1.0
    diagnostics.report(Time(), 5.0, 0.5)
    assert diagnostics.log_line is None
