"""The streaming session behind the node and the offline tool, opened from their options.

The real session is imported late: tests that hand the node a stand-in never load the model code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

import numpy as np

from gct_stream_ros.settings import SettingsError, settings_error
from gct_stream_ros.stream.config import ConfigError, EngineConfig
from gct_stream_ros.stream.input_frame import PreparedImage
from gct_stream_ros.stream.result import FrameResult
from gct_stream_ros.stream.stats import SessionStats


class Session(Protocol):
    """What the node needs of ``StreamSession`` (tests give it a stand-in). ``prepare`` reads only the
    settings: the executor thread calls it; everything else is the worker's (docs/node.md, "Behaviour")."""

    def prepare(self, image: np.ndarray) -> PreparedImage: ...

    def push_prepared(self, prepared: PreparedImage, stamp_ns: int) -> list[FrameResult]: ...

    def flush(self) -> list[FrameResult]: ...

    def reset(self) -> None: ...

    def stats(self) -> SessionStats: ...


SessionFactory = Callable[[EngineConfig], Session]
SessionT = TypeVar("SessionT")


def build_session(config: EngineConfig) -> Session:
    """The real engine."""
    from gct_stream_ros.stream.session import StreamSession

    return StreamSession(config)


def open_session(factory: Callable[[EngineConfig], SessionT], config: EngineConfig) -> SessionT:
    """The session of ``config``; weights that cannot be loaded, and a device this machine lacks, are
    parameter errors naming the file or the device."""
    try:
        return factory(config)
    except ConfigError as error:
        raise settings_error(error) from None
    except Exception as error:
        from gct_stream_ros.model.checkpoint import CheckpointError

        if isinstance(error, CheckpointError):
            raise SettingsError(f"model.checkpoint={config.checkpoint!r}: {error}") from None
        raise
