"""The per-frame tracking status on ``status`` (like isaac_ros_visual_slam's ``visual_slam/status`` or
rtabmap's ``odom_info``), and the same numbers in ``/diagnostics``.

The message is ``diagnostic_msgs/DiagnosticStatus``: a type every ROS install has, readable with
``ros2 topic echo`` and by anything that already parses diagnostics. The level says how usable the
pose is: OK while tracking, WARN while initialising or just after a reset, ERROR when a step
failed (lost).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue


class TrackingState(Enum):
    TRACKING = "tracking"
    """A pose was estimated for the frame."""
    INITIALISING = "initialising"
    """The frame is waiting for the scale frames of its sequence: no pose yet."""
    LOST = "lost"
    """The step failed (e.g. out of GPU memory); the session starts again."""
    RESET = "reset"
    """The world frame was rebuilt (reset service, stamp going backwards, input size change)."""


LEVELS = {
    TrackingState.TRACKING: DiagnosticStatus.OK,
    TrackingState.INITIALISING: DiagnosticStatus.WARN,
    TrackingState.RESET: DiagnosticStatus.WARN,
    TrackingState.LOST: DiagnosticStatus.ERROR,
}


@dataclass(frozen=True)
class TrackingStatus:
    """What happened to one input frame."""

    state: TrackingState
    reason: str
    """Why the state is what it is, in words (empty while tracking)."""
    stamp_ns: int
    """The input image's stamp."""
    step_ms: float
    """Time the model took for this frame."""
    latency_ms: float
    """From the image's arrival at the node to the end of its outputs."""
    frames_dropped: int
    """Frames dropped since the start (queue overflow, no camera_info)."""
    keyframes: int
    cached_tokens: int
    """Tokens per layer in the KV cache."""
    gpu_memory_bytes: int
    """Held by this process's tensors on the model's device (0 on the CPU)."""
    sequence: int

    def key_values(self) -> list[KeyValue]:
        values = {
            "state": self.state.value,
            "stamp [ns]": str(self.stamp_ns),
            "step [ms]": f"{self.step_ms:.1f}",
            "input to output latency [ms]": f"{self.latency_ms:.1f}",
            "frames dropped": str(self.frames_dropped),
            "keyframes": str(self.keyframes),
            "cached tokens": str(self.cached_tokens),
            "GPU memory [MB]": f"{self.gpu_memory_bytes / 2 ** 20:.1f}",
            "sequence": str(self.sequence),
        }
        return [KeyValue(key=key, value=value) for key, value in values.items()]

    def message(self, name: str, hardware_id: str = "") -> DiagnosticStatus:
        """The ``DiagnosticStatus`` published on ``status`` and added to ``/diagnostics``."""
        text = self.state.value + (f": {self.reason}" if self.reason else "")
        return DiagnosticStatus(level=LEVELS[self.state], name=name, message=text, hardware_id=hardware_id,
                                values=self.key_values())


def gpu_memory_bytes(device: str) -> int:
    """Bytes this process's tensors hold on ``device`` (``SessionStats.device``); 0 on the CPU, where torch is
    not even imported (a node with a stand-in session never loads it)."""
    if not device.startswith("cuda"):
        return 0
    from gct_stream_ros.stream.device import memory_allocated_bytes

    return memory_allocated_bytes(device)
