"""What the node and the offline tool report about the scale: its value, source and confidence."""

from __future__ import annotations

from dataclasses import dataclass

UNSCALED = "unscaled model units"


@dataclass(frozen=True)
class ScaleState:
    source: str
    """The configured source ('none', 'odometry', 'depth', 'camera_height', 'fixed')."""
    scale: float = 1.0
    """Metres per model unit; 1 while ``metric`` is false (outputs stay in model units)."""
    metric: bool = False
    """True once the source gave an estimate (at once for 'fixed'; never for 'none')."""
    relative_uncertainty: float | None = None
    """Relative standard error of the estimate (0.01 = 1 %); 0 for 'fixed', None without an estimate."""
    samples: int = 0
    """Samples the estimate rests on (after outlier rejection)."""

    def describe(self) -> str:
        """One line for logs and /diagnostics."""
        if not self.metric:
            waiting = "" if self.source == "none" else f" (source {self.source}: no estimate yet)"
            return UNSCALED + waiting
        uncertainty = ("" if self.relative_uncertainty is None
                       else f" +- {100 * self.relative_uncertainty:.1f} %")
        return f"{self.scale:.4g} m per model unit{uncertainty} from {self.source} ({self.samples} samples)"
