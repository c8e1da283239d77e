"""Whether Ctrl-C (SIGINT) came, for a process that spins an rclpy executor.

On SIGINT, rclpy's own handler shuts the context down from a thread of its own and then chains to
Python's handler, which raises ``KeyboardInterrupt`` at the main thread's next bytecode. That bytecode
may run inside rclpy's take of a message (building the Python message), where pybind11 turns the
exception into ``RuntimeError("Unable to convert call argument ...")`` while ``rclpy.ok()`` may
still be true: the node then exited with status 1 instead of stopping cleanly (seen in CI under a
busy ``/tf``). ``SigintRecord.clean_stop`` tells that error apart from a real one.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import rclpy
from rclpy.executors import ExternalShutdownException


class SigintRecord:
    """Whether SIGINT came while the record was installed (``recorded_sigint``)."""

    def __init__(self) -> None:
        self._came = threading.Event()

    def note(self) -> None:
        self._came.set()

    @property
    def came(self) -> bool:
        return self._came.is_set()

    @property
    def stop_asked(self) -> bool:
        """Whether an error out of an executor's spin now is the stop that was asked for: a SIGINT came,
        or something shut the context down (rclpy's SIGTERM handler, ``rclpy.shutdown``)."""
        return self.came or not rclpy.ok()

    @contextmanager
    def clean_stop(self) -> Iterator[None]:
        """Within the block, what a stop raises ends it quietly: ``KeyboardInterrupt``,
        ``ExternalShutdownException``, and a ``RuntimeError`` (RCLError, or pybind's error when a take
        meets a signal) once ``stop_asked``. Anything else propagates."""
        try:
            yield
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        except RuntimeError:
            if not self.stop_asked:
                raise


@contextmanager
def recorded_sigint() -> Iterator[SigintRecord]:
    """Within the block, SIGINT still raises ``KeyboardInterrupt``, and the yielded record notes it.

    Enter it before ``rclpy.init``: rclpy keeps the handler it finds and calls it after its own, while
    a handler installed later would replace rclpy's. Outside the main thread (where Python runs no
    signal handlers) nothing is installed and the record never notes a SIGINT.
    """
    record = SigintRecord()
    if threading.current_thread() is not threading.main_thread():
        yield record
        return

    def note_and_raise(_signal_number: int, _frame: FrameType | None) -> None:
        record.note()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, note_and_raise)
    try:
        yield record
    finally:
        signal.signal(signal.SIGINT, previous)
