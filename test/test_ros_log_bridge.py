"""The package's Python log records reach the node's rclpy logger (hence the console and /rosout)."""

from __future__ import annotations

import logging

from gct_stream_ros.ros import log_bridge


class RecordingLogger:
    """Stands in for rclpy's ``RcutilsLogger``: keeps ``(severity, text)``."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, severity: str):
        return lambda text: self.lines.append((severity, text)) or True


def test_engine_records_are_forwarded_at_their_severity_until_detached():
    ros_logger = RecordingLogger()
    handler = log_bridge.attach(ros_logger)
    engine = logging.getLogger("gct_stream_ros.stream.session")
    try:
        engine.warning("input size changed from %s to %s", (28, 42), (42, 42))
        engine.info("sequence %d", 3)
        engine.debug("not at the default level")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            engine.exception("step failed")
        logging.getLogger("somebody.else").warning("not ours")
    finally:
        log_bridge.detach(handler)
    engine.warning("after detach")
    assert ros_logger.lines[:2] == [("warning", "input size changed from (28, 42) to (42, 42)"),
                                    ("info", "sequence 3")]
    severity, text = ros_logger.lines[2]
    assert severity == "error" and text.startswith("step failed\nTraceback") and "RuntimeError: boom" in text
    assert len(ros_logger.lines) == 3
