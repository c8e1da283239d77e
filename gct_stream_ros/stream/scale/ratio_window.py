"""A robust ratio over the most recent samples: the estimate every measuring scale source shares.

Samples are ratios (metres per model unit) with weights. They are compared in log space, where
a scale error is symmetric: samples farther than ``outlier_threshold`` robust deviations
(1.4826 x the median absolute deviation, at least ``MIN_DEVIATION``) from the median are
rejected (wheel slip, a bad depth frame, a wrong floor), and the estimate is the weighted mean
of the rest. Its uncertainty is the weighted spread of the kept samples over the square root of
their effective number (a relative standard error; the spread is at least ``MIN_DEVIATION``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826
"""The median absolute deviation of a normal distribution times this is its standard deviation."""
MIN_DEVIATION = 0.005
"""Robust deviations below 0.5 % are taken as 0.5 %: noise-free samples must not reject each other."""


@dataclass(frozen=True)
class RatioEstimate:
    value: float
    relative_uncertainty: float
    inliers: int


class RatioWindow:
    """The last ``size`` samples and their robust ratio."""

    def __init__(self, size: int, outlier_threshold: float) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=size)
        self.outlier_threshold = outlier_threshold
        self.added = 0
        """Samples kept since construction (also those the window has dropped since)."""

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, ratio: float, weight: float = 1.0) -> None:
        """Keep ``ratio`` (> 0 and finite; others are ignored) with ``weight`` (> 0)."""
        if np.isfinite(ratio) and ratio > 0 and weight > 0:
            self._samples.append((float(ratio), float(weight)))
            self.added += 1

    def clear(self) -> None:
        self._samples.clear()

    def estimate(self) -> RatioEstimate | None:
        if not self._samples:
            return None
        ratios, weights = np.array(self._samples).T
        logs = np.log(ratios)
        median = np.median(logs)
        deviation = max(MAD_TO_SIGMA * np.median(np.abs(logs - median)), MIN_DEVIATION)
        keep = np.abs(logs - median) <= self.outlier_threshold * deviation
        logs, weights = logs[keep], weights[keep]
        mean = np.average(logs, weights=weights)
        spread = max(np.sqrt(np.average((logs - mean) ** 2, weights=weights)), MIN_DEVIATION)
        effective_count = weights.sum() ** 2 / (weights**2).sum()
        return RatioEstimate(float(np.exp(mean)), float(spread / np.sqrt(effective_count)), int(keep.sum()))
