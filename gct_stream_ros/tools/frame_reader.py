"""Read, decode and preprocess the next input frames on a thread while the network steps.

Decoding a JPEG and resizing it cost a few ms per frame, which would add to every GPU step if
done in turn; OpenCV's decoder and PyTorch's resize release the GIL, so a reader thread runs them
beside the step (docs/tools.md, *Time per stage*). At most ``depth`` prepared frames wait in a
queue (memory stays bounded on long inputs); they come out in input order with their stamps, and
an error of the source (e.g. a video with no decodable frame) is raised in the consuming thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass

import numpy as np

from gct_stream_ros.stream.input_frame import PreparedImage
from gct_stream_ros.tools.frame_source import Frame, FrameSource

DEFAULT_DEPTH = 2
"""Frames prepared ahead: one to hide the next step's preprocessing, one of slack for a slow decode."""
_POLL_S = 0.1
"""How often a reader blocked on a full queue checks whether the consumer has gone."""


@dataclass(frozen=True)
class ReadFrame:
    frame: Frame
    prepared: PreparedImage
    decode_ms: float
    """Time the source took to read and decode this frame."""


class _End:
    """The source is exhausted (or failed with ``error``)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class FrameReader:
    """Iterates ``source`` on a thread, each image through ``prepare``; iterate it once, in a ``with``."""

    def __init__(self, source: FrameSource, prepare: Callable[[np.ndarray], PreparedImage],
                 depth: int = DEFAULT_DEPTH) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._source = source
        self._prepare = prepare
        self._queue: queue.Queue[ReadFrame | _End] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="gct_stream_offline reader", daemon=True)

    def __enter__(self) -> FrameReader:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[ReadFrame]:
        while True:
            item = self._queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item

    def close(self) -> None:
        """Stop the reader (also when the consumer stopped early) and wait for it."""
        self._stop.set()
        self._thread.join()

    def _read(self) -> None:
        try:
            with closing(iter(self._source)) as frames:  # a bag reader closes here, on this thread
                while not self._stop.is_set():
                    start = time.perf_counter()
                    frame = next(frames, None)
                    if frame is None:
                        break
                    decode_ms = (time.perf_counter() - start) * 1e3
                    self._put(ReadFrame(frame, self._prepare(frame.image), decode_ms))
        except BaseException as error:  # handed to the consumer, which raises it where it is seen
            self._put(_End(error))
            return
        self._put(_End())

    def _put(self, item: ReadFrame | _End) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue
