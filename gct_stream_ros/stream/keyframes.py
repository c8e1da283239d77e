"""Which streaming frames are stored in the network's caches (keyframes).

A selector is restarted with every sequence or window (``begin``) and then consulted once per
streaming frame: ``step_mode`` before the network step, ``conclude`` after it. Scale frames are
not its business (they are always stored).

* ``IntervalKeyframes``: the streaming frame at position ``p`` (0 = the first after the scale
  frames) is a keyframe iff ``p % interval == 0``; decided before the step (STORE or SKIP).
* ``FlowKeyframes``: every frame runs in DEFER mode; afterwards the frame is a keyframe if it
  is the first streaming frame, if its camera-induced flow against the last keyframe exceeds
  the threshold, or if ``max_gap`` frames have passed since the last keyframe. The caller
  then commits or rolls the frame back.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import torch

from gct_stream_ros.cache.base import StepMode
from gct_stream_ros.model.network import StepOutput
from gct_stream_ros.stream.config import EngineConfig
from gct_stream_ros.stream.flow import flow_magnitude


@dataclass
class KeyframeDecision:
    keyframe: bool
    flow: float | None = None
    """The flow that decided it (flow mode only)."""


class KeyframeSelector(abc.ABC):
    """Keyframe rule of one sequence or window (see the module docstring)."""

    @abc.abstractmethod
    def begin(self, scale_pose_enc: torch.Tensor) -> None:
        """Restart after a scale phase; ``scale_pose_enc`` ``[s, 9]`` are the scale frames' poses."""

    @abc.abstractmethod
    def step_mode(self) -> StepMode:
        """The mode the next streaming frame is run in."""

    @abc.abstractmethod
    def may_store_next(self) -> bool:
        """Whether the next streaming frame could become a keyframe (it fills a window if so)."""

    @abc.abstractmethod
    def conclude(self, output: StepOutput) -> KeyframeDecision:
        """Decide for the frame just run (``output`` holds exactly that frame)."""


class IntervalKeyframes(KeyframeSelector):
    def __init__(self, interval: int) -> None:
        self.interval = interval
        self._position = 0

    def begin(self, scale_pose_enc: torch.Tensor) -> None:
        self._position = 0

    def _next_is_keyframe(self) -> bool:
        return self._position % self.interval == 0

    def step_mode(self) -> StepMode:
        return StepMode.STORE if self._next_is_keyframe() else StepMode.SKIP

    def may_store_next(self) -> bool:
        return self._next_is_keyframe()

    def conclude(self, output: StepOutput) -> KeyframeDecision:
        decision = KeyframeDecision(self._next_is_keyframe())
        self._position += 1
        return decision


class FlowKeyframes(KeyframeSelector):
    def __init__(self, threshold: float, max_gap: int) -> None:
        self.threshold = threshold
        self.max_gap = max_gap
        self._keyframe_pose_enc: torch.Tensor | None = None
        self._since_keyframe = 0
        self._first = True

    def begin(self, scale_pose_enc: torch.Tensor) -> None:
        # The last scale frame plays the role of the last keyframe.
        self._keyframe_pose_enc = scale_pose_enc[-1]
        self._since_keyframe = 0
        self._first = True

    def step_mode(self) -> StepMode:
        return StepMode.DEFER

    def may_store_next(self) -> bool:
        return True

    def conclude(self, output: StepOutput) -> KeyframeDecision:
        if self._keyframe_pose_enc is None:
            raise RuntimeError("FlowKeyframes.begin must run after the scale phase")
        flow = flow_magnitude(output.pose_enc[0], self._keyframe_pose_enc, output.depth[0])
        self._since_keyframe += 1
        keyframe = self._first or flow > self.threshold or self._since_keyframe >= self.max_gap
        self._first = False
        if keyframe:
            self._keyframe_pose_enc = output.pose_enc[0]
            self._since_keyframe = 0
        return KeyframeDecision(keyframe, flow)


def keyframe_selector(config: EngineConfig) -> KeyframeSelector:
    """The selector of ``config.keyframe_mode`` ('every' is an interval of 1)."""
    if config.keyframe_mode == "flow":
        return FlowKeyframes(config.flow_threshold, config.max_keyframe_gap)
    return IntervalKeyframes(config.keyframe_interval if config.keyframe_mode == "interval" else 1)
