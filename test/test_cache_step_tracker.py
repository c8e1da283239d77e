"""The step protocol, once for every cache: the aggregator's caches and the camera head's cache refuse the
same misuse with the same errors, and number frames the same way."""

from __future__ import annotations

import pytest
import torch

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.cache.dense import DenseKVCache
from gct_stream_ros.cache.step_tracker import StepTracker
from gct_stream_ros.model.camera_cache import CameraKVCache

SPECIALS, PATCHES = 2, 3


class _Aggregator:
    """A dense cache driven like the aggregator does (one layer)."""

    def __init__(self) -> None:
        self.cache = DenseKVCache(1, SPECIALS, scale_frames=1, sliding_window=2)

    def begin(self, frames: int, mode: StepMode) -> None:
        self.cache.begin_step(frames, SPECIALS + PATCHES, mode)

    def attend(self, frames: int = 1) -> None:
        x = torch.zeros(frames, SPECIALS + PATCHES, 1, 4)
        self.cache.attend(0, x, x, x)


class _Camera:
    def __init__(self) -> None:
        self.cache = CameraKVCache(1, 1, scale_frames=1)

    def begin(self, frames: int, mode: StepMode) -> None:
        self.cache.begin_step(frames, mode)

    def attend(self, frames: int = 1) -> None:
        x = torch.zeros(frames, 1, 4)
        self.cache.attend(0, 0, x, x, x)


@pytest.fixture(params=[_Aggregator, _Camera], ids=["aggregator", "camera"])
def driver(request):
    return request.param()


def _step(driver, mode: StepMode, frames: int = 1) -> None:
    driver.begin(frames, mode)
    driver.attend(frames)
    driver.cache.end_step()


def test_misuse_is_refused_the_same_way(driver):
    with pytest.raises(RuntimeError, match="attend called outside"):
        driver.attend()
    with pytest.raises(RuntimeError, match="end_step called without begin_step"):
        driver.cache.end_step()
    with pytest.raises(RuntimeError, match="commit without a pending DEFER"):
        driver.cache.commit()
    _step(driver, StepMode.STORE, frames=2)
    with pytest.raises(ValueError, match="phase 1"):
        driver.begin(2, StepMode.STORE)
    driver.begin(1, StepMode.STORE)
    with pytest.raises(RuntimeError, match="begin_step called twice"):
        driver.begin(1, StepMode.STORE)
    driver.attend()
    driver.cache.end_step()
    _step(driver, StepMode.DEFER)
    with pytest.raises(RuntimeError, match="DEFER step must be committed or rolled back"):
        driver.begin(1, StepMode.SKIP)


def test_frames_are_counted_the_same_way(driver):
    _step(driver, StepMode.STORE, frames=2)
    _step(driver, StepMode.SKIP)
    assert driver.cache.frames_stored == 2
    _step(driver, StepMode.DEFER)
    assert driver.cache.frames_stored == 3
    driver.cache.rollback()
    assert driver.cache.frames_stored == 2
    _step(driver, StepMode.DEFER)
    driver.cache.commit()
    assert driver.cache.frames_stored == 3
    driver.cache.reset()
    assert driver.cache.frames_stored == 0
    _step(driver, StepMode.STORE, frames=2)  # phase 1 again after a reset


def test_tracker_numbers_frames_and_changes_nothing_until_begin():
    steps = StepTracker()
    assert steps.next_frames(3, StepMode.STORE) == [0, 1, 2] and steps.frames_stored == 0
    steps.begin([0, 1, 2], StepMode.STORE)
    assert steps.current() == ([0, 1, 2], StepMode.STORE)
    steps.end()
    steps.begin(steps.next_frames(1, StepMode.DEFER), StepMode.DEFER)
    assert steps.end() == ([3], StepMode.DEFER)
    assert steps.rollback() == 3 and steps.next_frames(1, StepMode.STORE) == [3]
