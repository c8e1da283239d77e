"""The budget of the budgeted policies: patch tokens per layer, absolute or a fraction of the window.

Pure Python (no torch), so that the session settings can validate it at start-up.
``budget`` is a fraction of the sliding window's patch tokens, ``(scale_frames + sliding_window)
x patches_per_frame`` per layer; ``budget_tokens`` > 0 overrides it with an absolute count. Either
must hold the protected scale frames' patches (``budget_floor``). ``evict_every`` is how often a
layer evicts: once it holds that many frames of patches over its budget (or that many recycled
frames' specials), it frees them all at once (``budgeted_cache.py``); 0 takes the policy's own.
"""

from __future__ import annotations

DEFAULT_BUDGET = 1.0
"""``cache.budget``: by default the budgeted policies keep as many patch tokens as the window."""
POLICY_CADENCE = 0
"""``cache.evict_every`` 0 (the default): each policy evicts at its own ``CachePolicy.evict_every``."""
MAX_EVICT_EVERY = 8
"""The largest ``evict_every``: the pools hold that many frames beyond the budget, and the model keeps a step
graph per phase of the eviction's cycle."""


def budget_floor(scale_frames: int, sliding_window: int) -> float:
    """The smallest ``budget`` fraction that holds the scale frames' patches."""
    return scale_frames / (scale_frames + sliding_window)


def check_budget(budget: float, budget_tokens: int, scale_frames: int, sliding_window: int) -> None:
    """Raise ``ValueError`` (one line) when the budget cannot hold the protected tokens."""
    if budget_tokens < 0:
        raise ValueError(f"budget_tokens={budget_tokens} must be >= 0 (0: budget x the window)")
    floor = budget_floor(scale_frames, sliding_window)
    if not budget_tokens and budget < floor:
        raise ValueError(f"budget={budget:g} cannot hold the {scale_frames} scale frames' patches: it must "
                         f"be >= {floor:.3f} (scale frames / (scale frames + sliding window) = "
                         f"{scale_frames}/({scale_frames}+{sliding_window}))")


def check_evict_every(evict_every: int) -> None:
    """Raise ``ValueError`` (one line) unless ``evict_every`` is ``POLICY_CADENCE`` or a number of stored
    frames in ``[1, MAX_EVICT_EVERY]``."""
    if not POLICY_CADENCE <= evict_every <= MAX_EVICT_EVERY:
        raise ValueError(f"evict_every={evict_every} must be 0 (the policy's own cadence) or between 1 "
                         f"(every stored frame) and {MAX_EVICT_EVERY}")


def mean_budget_tokens(budget: float, budget_tokens: int, scale_frames: int, sliding_window: int,
                       patches_per_frame: int) -> int:
    """Patch tokens a layer keeps on average, for frames of ``patches_per_frame`` patches."""
    floor = scale_frames * patches_per_frame
    mean = budget_tokens or round(budget * (scale_frames + sliding_window) * patches_per_frame)
    if mean < floor:
        raise ValueError(f"budget_tokens={mean} cannot hold the {scale_frames} scale frames' "
                         f"{floor} patch tokens")
    return mean
