"""Stamps are integer nanoseconds everywhere in the package, as ROS messages carry them (sec + nanosec)."""

from __future__ import annotations

NS_PER_S = 1_000_000_000


def split_stamp(stamp_ns: int) -> tuple[int, int]:
    """``(sec, nanosec)`` of a stamp, as ``builtin_interfaces/Time`` holds it."""
    return divmod(int(stamp_ns), NS_PER_S)


def join_stamp(sec: int, nanosec: int) -> int:
    """The stamp of ``builtin_interfaces/Time`` fields."""
    return sec * NS_PER_S + nanosec
