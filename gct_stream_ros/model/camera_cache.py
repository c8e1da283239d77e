"""The camera head's own KV cache: one key/value per stored frame, per refinement and trunk block.

The camera head attends over the camera tokens of the stored frames. Like the reference it
never evicts by default (``max_frames=0``: every stored frame of the sequence stays visible).
With ``max_frames > 0`` it keeps the ``scale_frames`` first frames and the newest others, an
explicit policy that bounds memory on endless streams.

Steps follow the aggregator's modes (``cache/base.py``): STORE appends then attends (phase 1:
the step's frames attend to each other), SKIP attends over cache + itself and stores nothing,
DEFER appends and waits for ``commit`` (apply the bound) or ``rollback`` (drop the frame).
"""

from __future__ import annotations

import torch

from gct_stream_ros.cache.base import StepMode


class CameraKVCache:
    def __init__(self, num_iterations: int, num_blocks: int, scale_frames: int = 0, max_frames: int = 0):
        if 0 < max_frames <= scale_frames:
            raise ValueError(f"max_frames ({max_frames}) must exceed scale_frames ({scale_frames})")
        self.num_iterations = num_iterations
        self.num_blocks = num_blocks
        self.scale_frames = scale_frames
        self.max_frames = max_frames
        self.reset()

    def reset(self) -> None:
        # [iteration][block] -> (K, V) ``[frames, H, D]``
        self._kv: list[list[tuple[torch.Tensor, torch.Tensor] | None]] = [
            [None] * self.num_blocks for _ in range(self.num_iterations)]
        self._frames_stored = 0
        self._mode: StepMode | None = None
        self._pending_defer = False

    @property
    def frames_stored(self) -> int:
        """Frames stored since the last reset (including any dropped by ``max_frames``)."""
        return self._frames_stored

    @property
    def frames_cached(self) -> int:
        """Frames whose K/V are held now."""
        kv = self._kv[0][0]
        return 0 if kv is None else kv[0].shape[0]

    def begin_step(self, num_frames: int, mode: StepMode) -> None:
        if self._pending_defer:
            raise RuntimeError("the last DEFER step must be committed or rolled back first")
        if num_frames > 1 and (mode is not StepMode.STORE or self._frames_stored > 0):
            raise ValueError("a multi-frame step (phase 1) needs STORE mode on an empty cache")
        self._mode = mode
        if mode is not StepMode.SKIP:
            self._frames_stored += num_frames

    def attend(self, iteration: int, block: int, q: torch.Tensor, k: torch.Tensor,
               v: torch.Tensor) -> torch.Tensor:
        """One camera token per frame: q, k, v ``[S, H, D]`` -> ``[S, H, D]``."""
        if self._mode is None:
            raise RuntimeError("attend called outside begin_step/end_step")
        cached = self._kv[iteration][block]
        keys, values = (k, v) if cached is None else (torch.cat((cached[0], k)), torch.cat((cached[1], v)))
        if self._mode is not StepMode.SKIP:
            self._kv[iteration][block] = (keys, values)
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(0, 1), keys.transpose(0, 1), values.transpose(0, 1))  # [H, S, D]
        return out.transpose(0, 1)

    def end_step(self) -> None:
        if self._mode is None:
            raise RuntimeError("end_step called without begin_step")
        self._pending_defer = self._mode is StepMode.DEFER
        if self._mode is StepMode.STORE:
            self._bound()
        self._mode = None

    def commit(self) -> None:
        if not self._pending_defer:
            raise RuntimeError("commit without a pending DEFER step")
        self._pending_defer = False
        self._bound()

    def rollback(self) -> None:
        if not self._pending_defer:
            raise RuntimeError("rollback without a pending DEFER step")
        self._pending_defer = False
        self._frames_stored -= 1
        self._keep(lambda kv: kv[:-1])

    def _bound(self) -> None:
        """Apply ``max_frames``: keep the scale frames and the newest others."""
        excess = self.frames_cached - self.max_frames
        if self.max_frames and excess > 0:
            head = self.scale_frames
            self._keep(lambda kv: torch.cat((kv[:head], kv[head + excess:])))

    def _keep(self, select) -> None:
        self._kv = [[None if kv is None else (select(kv[0]), select(kv[1])) for kv in blocks]
                    for blocks in self._kv]
