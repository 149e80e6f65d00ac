"""Atomic file output: write a temporary file beside the target, fsync, then rename into place.

An interrupted run therefore leaves either the old file or the new one at the target, never a
half-written one (a stray ``.*.tmp`` may remain beside it, never at the target's name).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from handgrad.spec import SpecError


def check_output_path(field: str, path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an output path that cannot be written."""
    target = Path(path)
    if target.is_dir():
        raise SpecError(field, f"expected a file path, got a directory: {target}")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise SpecError(field, f"directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpecError(field, f"directory is not writable: {parent}")
    if target.exists() and not os.access(target, os.W_OK):
        raise SpecError(field, f"file is not writable: {target}")
    return target


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one rename."""
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    try:
        yield Path(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    with atomic_path(path) as temporary:
        write(temporary)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    atomic_write(path, lambda temporary: temporary.write_bytes(data))
