"""ros/interrupts.py: SIGINT noted, still a KeyboardInterrupt, chained after rclpy's own handler."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

pytestmark = pytest.mark.ros

import rclpy  # noqa: E402

from gct_stream_ros.ros.interrupts import recorded_sigint  # noqa: E402


def test_a_real_sigint_is_noted_raised_and_shuts_rclpy_down_and_the_handler_comes_back(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", "187")
    handler = signal.getsignal(signal.SIGINT)
    with recorded_sigint() as sigint:
        rclpy.init()
        try:
            assert not sigint.came and not sigint.stop_asked
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5.0)
            assert sigint.came and sigint.stop_asked
            deadline = time.monotonic() + 5.0
            while rclpy.ok() and time.monotonic() < deadline:  # rclpy shuts down from its own thread
                time.sleep(0.01)
            assert not rclpy.ok()
        finally:
            rclpy.try_shutdown()
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_shut_down_context_is_a_stop_without_sigint(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", "187")
    with recorded_sigint() as sigint:
        rclpy.init()
        assert not sigint.stop_asked
        rclpy.shutdown()
        assert sigint.stop_asked and not sigint.came


def test_outside_the_main_thread_nothing_is_installed():
    handler = signal.getsignal(signal.SIGINT)
    seen = []

    def enter() -> None:
        with recorded_sigint() as sigint:
            seen.append((signal.getsignal(signal.SIGINT), sigint.came))

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen == [(handler, False)]
