"""The offline tool's writer thread: calls run in order, at most ``depth`` wait, errors reach the
submitting thread, closing runs what is queued."""

from __future__ import annotations

import threading

import pytest

from gct_stream_ros.tools.ordered_worker import OrderedWorker


def test_calls_run_in_submission_order_and_close_runs_what_is_queued():
    done = []
    with OrderedWorker(depth=2) as worker:
        for index in range(50):
            assert worker.submit(done.append, index) >= 0.0
    assert done == list(range(50))


def test_submit_waits_while_depth_calls_are_queued():
    release = threading.Event()
    done = []
    worker = OrderedWorker(depth=1)
    worker.submit(release.wait)  # running
    worker.submit(done.append, 1)  # queued: the queue is full
    submitted = threading.Event()

    def third() -> None:
        worker.submit(done.append, 2)
        submitted.set()

    thread = threading.Thread(target=third)
    thread.start()
    assert not submitted.wait(timeout=0.3)  # no room until the running call ends
    release.set()
    assert submitted.wait(timeout=5.0)
    thread.join()
    worker.close()
    assert done == [1, 2]


def test_an_error_stops_the_worker_and_is_raised_at_the_next_submit():
    done = []
    worker = OrderedWorker(depth=1)
    worker.submit(done.append, 1)
    worker.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        for index in range(100):  # the error shows at a submit once the worker has met it
            worker.submit(done.append, index)
    worker.close()  # raised once: closing afterwards is quiet
    assert done == [1]  # nothing after the failed call ran


def test_an_error_of_the_last_call_is_raised_at_close():
    worker = OrderedWorker()
    worker.submit(lambda: [][1])
    with pytest.raises(IndexError):
        worker.close()


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        OrderedWorker(depth=0)
