"""The offline tool's reader thread: frames come out prepared, in order, with their stamps; the
queue stays bounded; errors of the source or of the preprocessing reach the consumer; stopping
early stops the thread and closes the source."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator

import numpy as np
import pytest
import torch

from gct_stream_ros.model.preprocess import ImageGeometry
from gct_stream_ros.stream.input_frame import PreparedImage
from gct_stream_ros.tools.frame_reader import FrameReader
from gct_stream_ros.tools.frame_source import Frame, FrameSource, InputError


class CountingSource(FrameSource):
    """Frames whose pixels hold their index; ``fail_at`` raises there; endless when ``count`` is None."""

    def __init__(self, count: int | None, fail_at: int | None = None) -> None:
        self.count = count
        self.fail_at = fail_at
        self.produced = 0
        self.closed = threading.Event()
        self.description = "counting"
        self.skipped = []

    def __len__(self) -> int:
        return self.count or 0

    def __iter__(self) -> Generator[Frame, None, None]:
        try:
            index = 0
            while self.count is None or index < self.count:
                if index == self.fail_at:
                    raise InputError(f"frame {index} is broken")
                self.produced += 1
                yield Frame(1000 + index, np.full((2, 3, 3), index % 256, dtype=np.uint8))
                index += 1
        finally:
            self.closed.set()


def prepare(image: np.ndarray) -> PreparedImage:
    return PreparedImage(image=torch.from_numpy(image).permute(2, 0, 1).float(),
                         geometry=ImageGeometry((2, 3), (2, 3), (2, 3), 0), rgb=image, preprocess_ms=0.5)


def test_frames_come_out_prepared_in_order_with_their_stamps():
    with FrameReader(CountingSource(20), prepare) as reader:
        read = list(reader)
    assert [r.frame.stamp_ns for r in read] == [1000 + i for i in range(20)]
    assert [int(r.prepared.image[0, 0, 0]) for r in read] == list(range(20))
    assert all(r.prepared.preprocess_ms == 0.5 and r.decode_ms >= 0.0 for r in read)


@pytest.mark.parametrize("depth", [1, 2])
def test_the_reader_runs_at_most_depth_frames_ahead(depth):
    source = CountingSource(None)
    with FrameReader(source, prepare, depth=depth) as reader:
        frames = iter(reader)
        for consumed in range(1, 4):
            next(frames)
            time.sleep(0.05)  # room for the reader to run ahead, if it could
            # queued (depth) + one prepared and waiting for a free slot
            assert source.produced <= consumed + depth + 1


def test_an_error_of_the_source_reaches_the_consumer_after_the_frames_before_it():
    read = []
    with pytest.raises(InputError, match="frame 3 is broken"), \
            FrameReader(CountingSource(10, fail_at=3), prepare) as reader:
        read.extend(r.frame.stamp_ns for r in reader)
    assert read == [1000, 1001, 1002]


def test_an_error_of_the_preprocessing_reaches_the_consumer():
    def refuse(image: np.ndarray) -> PreparedImage:
        raise ValueError("expected an HxWx3 uint8 RGB image")

    with pytest.raises(ValueError, match="uint8"), FrameReader(CountingSource(5), refuse) as reader:
        list(reader)


def test_stopping_early_stops_the_thread_and_closes_the_source():
    source = CountingSource(None)
    reader = FrameReader(source, prepare, depth=2)
    with reader:
        for count, _ in enumerate(reader, start=1):
            if count == 3:
                break
    # close() joined the thread, which closes the source before it ends
    assert source.closed.is_set()


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        FrameReader(CountingSource(1), prepare, depth=0)
