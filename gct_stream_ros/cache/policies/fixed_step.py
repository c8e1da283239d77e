"""The fixed-shape steps of ``BudgetedKVCache`` (``budgeted_cache.py``): what the host decides, what the
device reads.

A single-frame STORE or SKIP step of a non-scale frame at token granularity does all its host
bookkeeping in ``begin_step`` (each layer's lengths and counts are final before any kernel runs)
and its device work reads every number that changes from one step to the next from one
``StepValues`` tensor:
the frame's index, the recycled frame's, and per layer the slot the frame is written at, the
length before and after the eviction and the attended key range. Its kernels work over each
pool's whole capacity with the slots past the length masked (``TokenPool.in_use``,
``attention_mass``'s ``num_keys``), and attention reads its range end from the device
(``PoolAttention.attend_range``). So the device work of two such steps is the same whenever
``graph_key()`` is, and the model replays it from one CUDA graph (``model/step_graphs.py``).
The key holds what the host still decides: the storage (the pools' addresses: they change only
when the frame size changes or an unbounded pool grows), whether the step stores, each layer's
count of freed slots and its captured-prefix length. A SKIP step (a non-keyframe) frees nothing;
in the steady state a STORE step frees one frame of patches per layer, plus one frame of
specials once ``max_frames`` recycles a frame at every step, so the key changes only

* when the first frame is recycled by ``max_frames`` (from then on one more frame of specials
  leaves per STORE step);
* for the STORE steps after a re-allocation that moved a layer's budget, while that layer's
  patch count catches up with it (those steps get no key: they run eagerly, as ``None`` keys do);
* when a re-allocation moves a layer's budget by more than a frame of patches from its captured
  prefix (``pool_attention.captured_prefix``);
* when the storage changes.
"""

from __future__ import annotations

from dataclasses import dataclass

FRAME, RECYCLED = 0, 1
"""The step values of a fixed-shape step: the frame's index, the recycled frame's (-1: none)..."""
PREFIX, ATTEND_END, START, APPENDED, KEPT = range(5)
"""...then per layer (``LAYER_VALUES`` from ``layer_values``): the captured prefix, the end of the
attended keys, the slot the frame is written at, the length after the append and after the eviction."""
LAYER_VALUES = 5


def layer_values(layer: int) -> int:
    """Index of ``layer``'s first step value."""
    return 2 + LAYER_VALUES * layer


@dataclass(frozen=True)
class FixedStep:
    """What the host decided for a fixed-shape step (see the module docstring), per layer."""

    stores: bool
    """A STORE step (else SKIP: the frame is attended after the prefix, not kept)."""
    counts: tuple[int, ...]
    """Slots the layer frees."""
    prefixes: tuple[int, ...]
    """Keys attended through the captured prefix (0: all through the flash kernel)."""
    recycling: bool
    """A frame's tokens are recycled by ``max_frames`` at this step."""
