"""Safe file output: checked before any work, written atomically, never over an input.

* :func:`check_outputs` refuses, before any work, an output path that is empty, names a directory
  (or ends in a separator), cannot be written, or resolves to an input file or to another output.
* :func:`atomic_path` writes a temporary file beside the real target, fsyncs it, then renames it
  into place: an interrupted run leaves either the old file or the new one, never a half-written one
  (a stray ``.*.tmp`` may remain beside it after SIGKILL). A symlinked output is written at the
  file it points to, so the link stays a link. A special file (``/dev/null``, a FIFO, a terminal)
  is written through, never replaced by a regular file.
* A write that fails (a full disk, a vanished directory) is a :class:`SpecError` naming the output
  option; the temporary file is removed.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from handgrad.contract.spec import SpecError


def _is_special(path: Path) -> bool:
    """An existing file that is not a regular file: a device, a FIFO, a socket."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def check_output_path(field: str, path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an output path that cannot be written."""
    text = os.fspath(path)
    if not text.strip():
        raise SpecError(field, "expected a file path, got an empty value")
    if text.endswith((os.sep, "/")) or Path(text).is_dir():
        raise SpecError(field, f"expected a file path, got a directory: {text}")
    target = Path(os.path.realpath(text))
    if _is_special(target):
        if not os.access(target, os.W_OK):
            raise SpecError(field, f"file is not writable: {text}")
        return target
    parent = target.parent
    if not parent.is_dir():
        raise SpecError(field, f"directory does not exist: {Path(text).parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpecError(field, f"directory is not writable: {parent}")
    if target.exists() and not os.access(target, os.W_OK):
        raise SpecError(field, f"file is not writable: {text}")
    return target


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    outputs: Mapping[str, str | None], inputs: Mapping[str, str | None] | None = None
) -> None:
    """Check every given output (``{"--json": path, ...}``) and refuse, naming both options, one
    that is the same file as an input or as another output. Special files (``/dev/null``) may be
    given twice: they are written through, never replaced."""
    given = {field: path for field, path in outputs.items() if path is not None}
    for field, path in given.items():
        check_output_path(field, path)
    sources = {field: path for field, path in (inputs or {}).items() if path}
    for field, path in given.items():
        for source, input_path in sources.items():
            if _same_file(path, input_path):
                raise SpecError(field, f"{path} is the {source} input; an output never replaces an input")
    fields = list(given)
    for i, field in enumerate(fields):
        for other in fields[i + 1 :]:
            same = _same_file(given[field], given[other])
            if same and not _is_special(Path(os.path.realpath(given[field]))):
                raise SpecError(field, f"{given[field]} is also the {other} output; give each its own file")


@contextmanager
def atomic_path(path: str | os.PathLike[str], field: str = "output") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces the file at ``path`` in one rename
    (at the file a symlink points to; a special file is written through instead)."""
    target = Path(os.path.realpath(os.fspath(path)))
    if _is_special(target):
        with tempfile.TemporaryDirectory(prefix="handgrad-") as folder:
            temporary = Path(folder) / target.name
            yield temporary
            _copy_through(temporary, target, field)
        return
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise SpecError(field, f"cannot write {path}: {error.strerror}") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    try:
        yield Path(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError) and not isinstance(error, SpecError):
            raise SpecError(field, f"cannot write {path}: {error.strerror or error}") from None
        raise


def _copy_through(source: Path, target: Path, field: str) -> None:
    try:
        with open(source, "rb") as data, open(target, "wb") as out:
            while chunk := data.read(1 << 20):
                out.write(chunk)
    except OSError as error:
        raise SpecError(field, f"cannot write {target}: {error.strerror or error}") from None


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None], field: str = "output") -> None:
    with atomic_path(path, field) as temporary:
        write(temporary)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, field: str = "output") -> None:
    atomic_write(path, lambda temporary: temporary.write_bytes(data), field)
