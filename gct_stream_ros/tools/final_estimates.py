"""Apply the engine's revisions: hand out each frame once, with its latest estimate.

With online windows the next window re-estimates the overlap frames of the previous one
(``FrameResult.revision``), and it does so when it starts, i.e. in the same ``push`` that
returns its first new frame. So once a new (non-revision) frame of window ``k`` has been seen,
no estimate made by an earlier window can change any more: those are final. Windows count
from 0 again in a new sequence (an input size change), which ends the previous one: windows
are therefore compared as ``(sequence, window)``. Without windows every estimate is final at
once. Final frames of one ``add`` come out in input order; frames revised by window ``k`` come
out after window ``k``'s own early frames (rosbag2 replays by timestamp, so the order of
writing does not matter there).
"""

from __future__ import annotations

from collections.abc import Iterable

from gct_stream_ros.stream.result import FrameResult


class LateRevisionError(RuntimeError):
    """A revision arrived for a frame already handed out as final (the engine broke the rule above)."""


class FinalEstimates:
    def __init__(self, windowed: bool) -> None:
        self.windowed = windowed
        self._pending: dict[int, FrameResult] = {}
        self._finalized: set[int] = set()
        self._newest_window = (0, 0)
        self.revisions_applied = 0

    def add(self, results: Iterable[FrameResult]) -> list[FrameResult]:
        """Take a ``push``'s results; return the estimates that became final, by frame index."""
        for result in results:
            if result.revision:
                if result.index in self._finalized:
                    raise LateRevisionError(f"frame {result.index} was revised by window {result.window} "
                                            "after it was final")
                self.revisions_applied += result.index in self._pending
            else:
                self._newest_window = max(self._newest_window, _window_of(result))
            self._pending[result.index] = result
        if not self.windowed:
            return self.finish()
        return self._release([i for i, r in self._pending.items() if _window_of(r) < self._newest_window])

    def finish(self) -> list[FrameResult]:
        """Every estimate still held (the end of the stream makes them final)."""
        return self._release(list(self._pending))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _release(self, indices: list[int]) -> list[FrameResult]:
        self._finalized.update(indices)
        return [self._pending.pop(i) for i in sorted(indices)]


def _window_of(result: FrameResult) -> tuple[int, int]:
    return result.sequence, result.window
