"""The offline tool's writer thread and the node's publisher thread: calls run in order, at most ``depth``
wait, errors reach the submitting thread (or ``on_error``, and the next call runs), closing runs what is
queued."""

from __future__ import annotations

import threading

import pytest

from gct_stream_ros.stream.ordered_worker import OrderedWorker


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


def test_with_on_error_a_failed_call_is_reported_and_the_next_ones_run():
    done, errors = [], []
    with OrderedWorker(depth=1, on_error=errors.append) as worker:
        worker.submit(done.append, 1)
        worker.submit(lambda: 1 / 0)
        worker.submit(done.append, 2)
    assert done == [1, 2] and [type(e) for e in errors] == [ZeroDivisionError]


def test_a_failing_on_error_does_not_end_the_worker():
    done = []

    def broken_handler(error: Exception) -> None:
        raise RuntimeError("handler broke")

    with OrderedWorker(on_error=broken_handler) as worker:
        worker.submit(lambda: 1 / 0)
        worker.submit(done.append, 1)
    assert done == [1]


def test_idle_only_once_every_submitted_call_has_run():
    release = threading.Event()
    worker = OrderedWorker(depth=2)
    assert worker.idle
    worker.submit(release.wait)
    worker.submit(lambda: None)
    assert not worker.idle
    release.set()
    worker.close()
    assert worker.idle


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        OrderedWorker(depth=0)
