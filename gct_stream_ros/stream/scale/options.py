"""The settings of the metric scale (the node's ``scale.*`` parameters), validated."""

from __future__ import annotations

from dataclasses import dataclass

SCALE_SOURCES = ("none", "odometry", "depth", "camera_height", "fixed")
ODOMETRY_INPUTS = ("tf", "topic")


class ScaleOptionsError(ValueError):
    """A scale setting is out of range or inconsistent; the message says which and why."""


@dataclass(frozen=True)
class ScaleOptions:
    """Field docs are the user-facing descriptions (docs/node.md, *Metric scale*)."""

    source: str = "none"
    """'none' (model units), 'odometry', 'depth' (aligned metric depth image), 'camera_height' or 'fixed'."""
    factor: float = 1.0
    """'fixed': metres per model unit."""
    odometry_input: str = "topic"
    """'odometry': 'topic' (nav_msgs/Odometry on scale/odometry, carried to the camera through the base ->
    camera mount) or 'tf' (the camera frame in frames.odom from TF: only when another node publishes
    odom -> base, since by default this node does; docs/node.md, "Frames and TF")."""
    odometry_min_motion: float = 0.1
    """'odometry': metres the camera must move (by odometry) between two compared increments."""
    odometry_max_turn_deg: float = 20.0
    """'odometry': increments turning more than this (by the model) are ignored (turning in place)."""
    camera_height: float = 0.0
    """'camera_height': height of the camera's optical centre above the floor, metres."""
    floor_max_tilt_deg: float = 30.0
    """'camera_height': largest angle between the floor's normal and the camera's down axis."""
    depth_min: float = 0.2
    """'depth': sensor depths below this (metres) are ignored."""
    depth_max: float = 10.0
    """'depth': sensor depths above this (metres) are ignored."""
    min_confidence: float = 1.0
    """'depth', 'camera_height': model pixels below this confidence are ignored."""
    min_samples: int = 5
    """Samples (odometry increments, depth or floor frames) before the first estimate."""
    window: int = 30
    """Most recent samples the estimate is made from."""
    outlier_threshold: float = 3.0
    """Samples farther than this many robust deviations from the median are rejected."""
    smoothing: float = 0.3
    """Fraction of the way the applied scale moves towards each new estimate (1: no smoothing)."""
    sync_tolerance_s: float = 0.05
    """Largest stamp difference between an image and the odometry or depth matched to it."""

    def validate(self) -> ScaleOptions:
        """Raise ``ScaleOptionsError`` naming the first invalid setting; return self when valid."""
        if self.source not in SCALE_SOURCES:
            raise ScaleOptionsError(f"source={self.source!r} is not one of {', '.join(SCALE_SOURCES)}")
        if self.odometry_input not in ODOMETRY_INPUTS:
            raise ScaleOptionsError(f"odometry_input={self.odometry_input!r} is not one of "
                                    f"{', '.join(ODOMETRY_INPUTS)}")
        if self.source == "fixed" and not self.factor > 0:
            raise ScaleOptionsError(f"factor={self.factor} must be > 0 for the 'fixed' source")
        if self.source == "camera_height" and not self.camera_height > 0:
            raise ScaleOptionsError("camera_height must be > 0 (metres) for the 'camera_height' source")
        if not 0 <= self.depth_min < self.depth_max:
            raise ScaleOptionsError(f"depth_min={self.depth_min} must be >= 0 and below "
                                    f"depth_max={self.depth_max}")
        if not 1 <= self.min_samples <= self.window:
            raise ScaleOptionsError(f"min_samples={self.min_samples} must be between 1 and "
                                    f"window={self.window}")
        if not 0 < self.smoothing <= 1:
            raise ScaleOptionsError(f"smoothing={self.smoothing} must be in (0, 1]")
        if not self.odometry_min_motion > 0:
            raise ScaleOptionsError(f"odometry_min_motion={self.odometry_min_motion} must be > 0")
        return self
