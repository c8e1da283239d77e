"""The worker thread: order, drop policies, errors, clearing and stopping."""

from __future__ import annotations

import threading
import time

import pytest

from gct_stream_ros.ros.worker import ALL_CAPACITY, FrameWorker


def _wait(condition, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


class Gate:
    """A handler that records items and blocks until released, so tests control the worker's pace."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, item: int) -> None:
        self.started.set()
        self.release.wait(2.0)
        self.items.append(item)


def busy_worker(policy: str, size: int, first_item: int = 0) -> tuple[Gate, FrameWorker]:
    """A worker whose handler is inside ``first_item`` and waits for the gate: its queue is empty."""
    gate = Gate()
    worker = FrameWorker(gate, on_error=pytest.fail, policy=policy, size=size)
    worker.submit(first_item)
    assert gate.started.wait(1.0)
    return gate, worker


def test_latest_keeps_the_newest_and_counts_drops():
    gate, worker = busy_worker("latest", 2)
    dropped = [worker.submit(i) for i in range(1, 6)]
    assert dropped == [0, 0, 1, 1, 1] and worker.dropped == 3 and worker.backlog == 2
    gate.release.set()
    _wait(lambda: worker.idle)
    assert gate.items == [0, 4, 5] and worker.processed == 3
    assert worker.stop()


def test_all_processes_everything_in_order_and_reports_a_backlog():
    gate, worker = busy_worker("all", 2)
    for i in range(1, 5):
        assert worker.submit(i) == 0
    assert worker.behind
    gate.release.set()
    _wait(lambda: worker.idle)
    assert gate.items == [0, 1, 2, 3, 4] and not worker.behind and worker.dropped == 0
    assert worker.stop()


def test_all_is_bounded_by_its_capacity():
    gate, worker = busy_worker("all", 1, first_item=-1)
    dropped = sum(worker.submit(i) for i in range(ALL_CAPACITY + 3))
    assert dropped == 3 and worker.backlog == ALL_CAPACITY
    worker.clear()
    gate.release.set()
    assert worker.stop()


def test_errors_go_to_the_callback_and_the_worker_goes_on():
    errors: list[Exception] = []
    seen: list[int] = []

    def handle(item: int) -> None:
        if item == 1:
            raise RuntimeError("boom")
        seen.append(item)

    worker = FrameWorker(handle, on_error=errors.append, policy="all", size=10)
    for i in range(3):
        worker.submit(i)
    _wait(lambda: worker.processed == 3)
    assert seen == [0, 2] and [str(e) for e in errors] == ["boom"]
    assert worker.stop()


def test_a_failing_error_callback_is_logged_and_the_worker_goes_on(caplog):
    seen: list[int] = []

    def handle(item: int) -> None:
        if item == 0:
            raise RuntimeError("step failed")
        seen.append(item)

    def recover(error: Exception) -> None:
        raise ValueError("recovery failed too")

    worker = FrameWorker(handle, on_error=recover, policy="all", size=10)
    for i in range(3):
        worker.submit(i)
    _wait(lambda: worker.processed == 3)
    assert seen == [1, 2]
    assert "recovering from RuntimeError('step failed') failed" in caplog.text
    assert "ValueError: recovery failed too" in caplog.text
    assert worker.stop()


def test_clear_forgets_queued_items_without_counting_drops():
    gate, worker = busy_worker("all", 10)
    worker.submit(1)
    worker.submit(2)
    assert worker.clear() == 2 and worker.dropped == 0
    gate.release.set()
    _wait(lambda: worker.idle)
    assert gate.items == [0]
    assert worker.stop()


def test_stop_joins_quickly_and_reports_a_stuck_handler():
    gate, worker = busy_worker("latest", 1)
    started = time.monotonic()
    assert not worker.stop(timeout_s=0.2)
    assert time.monotonic() - started < 1.0
    gate.release.set()
    assert FrameWorker(lambda item: None, on_error=pytest.fail).stop(timeout_s=1.0)


def test_invalid_policy_is_refused():
    with pytest.raises(ValueError):
        FrameWorker(lambda item: None, on_error=pytest.fail, policy="some")
