"""Map files are replaced atomically and readable like any file the user writes (0644 with umask 022)."""

from __future__ import annotations

import os

import pytest

from gct_stream_ros.mapping import atomic_file
from gct_stream_ros.mapping.atomic_file import write_atomically


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_usual_mode_under_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = write_atomically(tmp_path / "map.ply", b"new")
    assert path.stat().st_mode & 0o777 == mode
    write_atomically(path, b"newer")
    assert path.stat().st_mode & 0o777 == mode and path.read_bytes() == b"newer"


@pytest.mark.parametrize(("step", "error"), [("replace", KeyboardInterrupt()),
                                              ("fsync", OSError(28, "No space left on device"))])
def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, step, error):
    """A signal (KeyboardInterrupt) or a full disk in the middle of a save: the old file stays whole."""
    path = tmp_path / "trajectory.tum"
    write_atomically(path, b"old content")

    def fail(*_arguments):
        raise error

    monkeypatch.setattr(atomic_file.os, step, fail)
    with pytest.raises(type(error)):
        write_atomically(path, b"new content that never lands")
    monkeypatch.undo()
    assert path.read_bytes() == b"old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trajectory.tum"]
