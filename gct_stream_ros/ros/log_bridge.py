"""Python ``logging`` of the package (the engine's warnings, e.g. "input size changed") into the node's
rclpy logger, so that they reach the console and ``/rosout`` like the node's own lines.

The engine never imports ROS (``docs/architecture.md``): it logs through ``logging``, and the node
attaches a ``NodeLogHandler`` to the package's logger for as long as it lives.
"""

from __future__ import annotations

import logging
from typing import Protocol

PACKAGE_LOGGER = "gct_stream_ros"


class RosLogger(Protocol):
    """What the handler needs of an ``rclpy`` ``RcutilsLogger``."""

    def debug(self, message: str) -> bool: ...

    def info(self, message: str) -> bool: ...

    def warning(self, message: str) -> bool: ...

    def error(self, message: str) -> bool: ...

    def fatal(self, message: str) -> bool: ...


class NodeLogHandler(logging.Handler):
    """Forwards each record to the rclpy logger at the matching severity (the rclpy logger filters)."""

    def __init__(self, ros_logger: RosLogger) -> None:
        super().__init__(logging.DEBUG)
        self._ros_logger = ros_logger
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.CRITICAL:
                self._ros_logger.fatal(text)
            elif record.levelno >= logging.ERROR:
                self._ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros_logger.warning(text)
            elif record.levelno >= logging.INFO:
                self._ros_logger.info(text)
            else:
                self._ros_logger.debug(text)
        except Exception:  # logging must never raise into the code that logs (logging.Handler's rule)
            self.handleError(record)


def attach(ros_logger: RosLogger) -> NodeLogHandler:
    """Route the package's Python log records at INFO and above to ``ros_logger``; ``detach`` undoes it."""
    handler = NodeLogHandler(ros_logger)
    package = logging.getLogger(PACKAGE_LOGGER)
    package.addHandler(handler)
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    return handler


def detach(handler: NodeLogHandler) -> None:
    logging.getLogger(PACKAGE_LOGGER).removeHandler(handler)
