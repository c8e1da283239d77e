"""Run calls on one background thread, in the order they were submitted, at most ``depth`` waiting.

The offline tool assembles each push's results on one and writes each final estimate (its ROS
messages, the fused map, the bag) on another while its main thread runs the next network step; the
node publishes each frame's messages here while its worker steps the next frame
(docs/architecture.md, *Threads*). Most of that work is NumPy, serialisation and I/O, which release
the GIL. Unlike a ``ThreadPoolExecutor``, the queue is bounded (each waiting result holds a few MB).
Without ``on_error`` the first error stops the worker and is raised in the submitting thread, at its
next ``submit`` or at ``close``; with it, each failed call is handed to ``on_error`` on the worker's
thread and the next call runs (a live node goes on).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)
DEFAULT_DEPTH = 4
"""Calls waiting at most: a few results of slack for a slow write, bounded memory."""


class OrderedWorker:
    """Use as a context manager; ``close`` (or leaving the ``with``) runs what is queued, then stops."""

    def __init__(self, depth: int = DEFAULT_DEPTH, name: str = "ordered worker",
                 on_error: Callable[[Exception], None] | None = None) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue[tuple[Callable[..., object], tuple[object, ...]] | None] = queue.Queue(depth)
        self._on_error = on_error
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __enter__(self) -> OrderedWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def idle(self) -> bool:
        """Every submitted call has run."""
        with self._queue.mutex:
            return self._queue.unfinished_tasks == 0

    def submit(self, call: Callable[..., object], *args: object) -> float:
        """Queue ``call(*args)``; return the ms spent waiting for room. Raises the worker's error, if any."""
        self._raise_error()
        start = time.perf_counter()
        while True:
            try:
                self._queue.put((call, args), timeout=0.1)
                break
            except queue.Full:
                self._raise_error()  # a failed worker takes nothing more
        return (time.perf_counter() - start) * 1e3

    def close(self) -> None:
        """Run what is queued, stop the thread; raise the worker's error, if any."""
        while self._thread.is_alive():  # a worker that failed takes nothing more: stop waiting then
            try:
                self._queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            call, args = item
            try:
                call(*args)
            except BaseException as error:
                if self._on_error is None or not isinstance(error, Exception):
                    self._error = error  # raised in the submitting thread
                    return
                self._report(self._on_error, error)
            finally:
                self._queue.task_done()
        self._queue.task_done()  # the ``None`` of ``close``

    @staticmethod
    def _report(on_error: Callable[[Exception], None], error: Exception) -> None:
        """``on_error``; should it fail too, say so and go on with the next call."""
        try:
            on_error(error)
        except Exception:
            logger.exception("handling %r failed; the worker goes on with the next call", error)
