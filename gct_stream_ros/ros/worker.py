"""The worker thread that owns the model: the executor thread only enqueues frames.

``latest`` (live cameras) keeps the newest ``size`` frames and drops older ones, counting the
drops. ``all`` (bags, offline) processes every frame; it still holds at most ``ALL_CAPACITY``
frames so a stalled model cannot exhaust memory, and ``behind`` tells when the backlog exceeds
``size`` so the node can warn.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)
Item = TypeVar("Item")
ALL_CAPACITY = 1000
"""Frames the 'all' policy holds at most (VGA: about 4 GB, each frame with its prepared model input); beyond
it the oldest are dropped."""


class FrameWorker(Generic[Item]):
    """Runs ``handle(item)`` on its own thread for every submitted item, in order."""

    def __init__(self, handle: Callable[[Item], None], on_error: Callable[[Exception], None],
                 policy: str = "latest", size: int = 1, name: str = "gct_stream_worker") -> None:
        if policy not in ("latest", "all") or size < 1:
            raise ValueError(f"queue policy must be 'latest' or 'all' and size >= 1, got {policy!r}, {size}")
        self.policy, self.size = policy, size
        self._handle, self._on_error = handle, on_error
        self._queue: deque[Item] = deque()
        self._capacity = size if policy == "latest" else ALL_CAPACITY
        self._condition = threading.Condition()
        self._stopping = False
        self._busy = False
        self.dropped = 0
        self.processed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> int:
        """Enqueue ``item`` without waiting; return how many queued items it pushed out."""
        with self._condition:
            self._queue.append(item)
            dropped = 0
            while len(self._queue) > self._capacity:
                self._queue.popleft()
                dropped += 1
            self.dropped += dropped
            self._condition.notify()
        return dropped

    def clear(self) -> int:
        """Forget the queued items (not counted as drops); return how many there were."""
        with self._condition:
            count = len(self._queue)
            self._queue.clear()
            return count

    @property
    def backlog(self) -> int:
        with self._condition:
            return len(self._queue)

    @property
    def behind(self) -> bool:
        """More than ``size`` frames are waiting (only possible with the 'all' policy)."""
        return self.backlog > self.size

    @property
    def idle(self) -> bool:
        with self._condition:
            return not self._queue and not self._busy

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop after the item in progress; True when the thread ended within ``timeout_s``."""
        with self._condition:
            self._stopping = True
            self._queue.clear()
            self._condition.notify()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._stopping:
                    self._condition.wait()
                if self._stopping:
                    return
                item = self._queue.popleft()
                self._busy = True
            try:
                self._handle(item)
            except Exception as error:  # a failed step must not end the thread: the caller recovers
                self._recover(error)
            finally:
                with self._condition:
                    self._busy = False
                    self.processed += 1

    def _recover(self, error: Exception) -> None:
        """``on_error``; should it fail too, say so and keep the thread alive (frames would pile up)."""
        try:
            self._on_error(error)
        except Exception:
            logger.exception("recovering from %r failed; the worker goes on with the next frame", error)
