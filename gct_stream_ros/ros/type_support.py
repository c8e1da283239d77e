"""Load the C type support of message types up front, where a failure is one clear error.

``rclpy.serialization.serialize_message`` imports a type's C type support lazily, at its first
message, and turns any import failure into a bare "no type_support imported": on a worker thread
that surfaced mid-run with no reason given. Loaded up front, on the thread that starts the
run, a missing library is reported at start-up with the import's own reason.
"""

from __future__ import annotations

from collections.abc import Iterable

from rclpy.exceptions import NoTypeSupportImportedException
from rclpy.type_support import check_for_type_support


class TypeSupportError(RuntimeError):
    """A message type whose C type support cannot be imported."""


def load_type_support(message_types: Iterable[type]) -> None:
    """Import the C type support of every type in ``message_types`` now; ``TypeSupportError`` if one fails."""
    for message_type in message_types:
        try:
            check_for_type_support(message_type)
        except NoTypeSupportImportedException:
            package = message_type.__module__.split(".")[0]
            raise TypeSupportError(f"cannot serialize {package}/{message_type.__name__}: its C type support "
                                   f"does not import ({_import_failure(package)}); check LD_LIBRARY_PATH "
                                   f"and the {package} install") from None


def _import_failure(package: str) -> str:
    """Why ``package``'s type support does not import (the generated code only logs it at debug level)."""
    try:
        from rosidl_generator_py import import_type_support  # noqa: PLC0415 (its absence is a reason)

        import_type_support(package)
    except Exception as error:  # noqa: BLE001 (reported, whatever the import raised)
        return f"{type(error).__name__}: {error}"
    return "no error on a second import"
