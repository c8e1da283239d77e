"""Replace a file in one step, so a reader (or a crash) never sees half of it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

_FILE_MODE = 0o666
"""What ``open()`` asks for; the kernel applies the umask (0644 with the usual 022). ``mkstemp``
would leave 0600, hiding saved maps from other users and tools."""


def write_atomically(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: never write through a file or link someone else put at the temporary name.
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
