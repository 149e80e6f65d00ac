"""A big grid's rows serialised in a forked child process while the writer goes on.

Serialising a deep Walkthrough's 400,000 cells (:func:`handgrad.workbook.xlsx.grid_row`), or
formatting a deep step's 125,000 Trace rows, is pure Python: a thread would hold the GIL the
whole time. On Linux the writer forks instead: the child, a copy of the process, writes the rows'
XML into a pipe and exits; the parent meanwhile lays out and serialises the other sheets (or runs
the next steps), and a waiter thread deflates the child's rows as they come (pipe reads, CRC and
deflate release the GIL), so compressing overlaps serialising.

Whatever the parent needs is settled before the fork, so that the child changes nothing the
parent must know: the cells' style indices (the caller asks the workbook for them first) and
every text the rows put into the shared string table, added by :func:`register_texts` in the
order the rows would add them. The child checks that its rows found every text there; if not,
or if it fails in any other way, what the waiter compressed is dropped, nothing is added to the
stream, and :meth:`ForkedRows.join` says so: the caller then serialises the rows itself, which
gives the same bytes.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from handgrad.workbook.deflated import DeflatedStream

try:
    import fcntl
except ImportError:  # not on Linux: ENABLED is False
    fcntl = None  # type: ignore[assignment]

ENABLED = sys.platform.startswith("linux") and hasattr(os, "fork")
MIN_CELLS = 50_000  # a smaller grid is serialised faster than a process forks and hands it back
CHUNK = 1 << 20
PIPE_SIZE = 1 << 20  # Linux's largest pipe for an unprivileged process by default

_RUNNING: set[ForkedRows] = set()  # children not yet exited (their waiter still reading)


def busy() -> bool:
    """Whether a child is still at work: a second one would only share its CPU (the writer then
    serialises the rows itself meanwhile, on the CPU the run and the layout leave free)."""
    return bool(_RUNNING)


def texts(cells: Mapping[tuple[int, int], Any], longest: int) -> list[str]:
    """The texts a grid's ``cells`` (``{(row, col): cell}``) put into the shared string table, in
    the order their rows put them (by row, then column): a text cell's text (cut to ``longest``
    characters as :func:`~handgrad.workbook.xlsx.cell_xml` cuts it) and a non-finite number's
    ``nan``/``inf``/``-inf``, as :func:`~handgrad.workbook.xlsx.cell_xml` writes them."""
    found: list[tuple[tuple[int, int], str]] = []
    for position, cell in cells.items():
        value = cell.value
        kind = type(value)
        if (kind is float and value - value == 0) or value is None:  # most cells: no text
            continue
        if isinstance(value, str):
            if cell.is_text or value[:1] != "=" or len(value) < 2:
                found.append((position, value if len(value) <= longest else value[: longest - 1] + "…"))
        elif isinstance(value, (float, np.floating)) and not math.isfinite(value):
            found.append((position, "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")))
    found.sort()  # positions are distinct: the texts are never compared
    return [text for _, text in found]


class ForkedRows:
    """The XML pieces ``produce()`` yields, made in a forked child and deflated onto ``stream`` as
    they come: the child writes them into a pipe, a waiter thread reads and deflates them into a
    continuation of the stream (:meth:`~handgrad.workbook.deflated.DeflatedStream.continuation`),
    so that compressing goes on while the child serialises; :meth:`join` appends it to the stream
    once the child has exited cleanly, else drops it.

    ``strings`` (anything with a length: the shared string table) must not grow in the child:
    its texts are registered before (see :func:`texts`). Nothing may be added to ``stream``
    until :meth:`join`."""

    def __init__(self, produce: Callable[[], Iterable[bytes]], strings: Any, stream: DeflatedStream) -> None:
        self.size = 0  # bytes appended to the stream
        self._stream = stream
        self._ok = False
        self._error: BaseException | None = None
        self._continuation = stream.continuation()
        read, write = os.pipe()
        if fcntl is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
            with contextlib.suppress(OSError):  # a bigger pipe: the child runs on while the waiter deflates
                fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        with warnings.catch_warnings():
            # Python 3.12+ warns that a multi-threaded process may deadlock in a forked child;
            # this child takes no lock another thread could hold (it imports nothing, touches
            # no stream but its own pipe and runs no thread)
            warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
            try:
                self._pid = os.fork()
            except OSError:
                os.close(read)
                os.close(write)
                self._continuation.close()
                raise
        if self._pid == 0:  # the child: write the rows, exit without running anything else
            code = 1
            try:
                os.close(read)
                before = len(strings)
                with os.fdopen(write, "wb", buffering=CHUNK) as sink:
                    for piece in produce():
                        sink.write(piece)
                code = 0 if len(strings) == before else 3
            finally:
                os._exit(code)
        os.close(write)
        self._read = read
        _RUNNING.add(self)
        self._waiter = threading.Thread(target=self._wait, name="handgrad-rows-waiter", daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        try:
            try:
                while data := os.read(self._read, CHUNK):
                    self._continuation.add(data)
            finally:
                os.close(self._read)
            try:
                _, status = os.waitpid(self._pid, 0)
            except ChildProcessError:  # reaped by someone else (SIGCHLD ignored): its word is lost
                return
            self._ok = os.waitstatus_to_exitcode(status) == 0
        except BaseException as error:  # raised again by join, in the writer's thread
            self._error = error
        finally:
            _RUNNING.discard(self)

    def join(self) -> bool:
        """Wait for the child and the waiter: True when the pieces are in the stream, False when
        the child failed (nothing was added: the caller serialises the rows itself)."""
        self._waiter.join()
        continuation, self._continuation = self._continuation, None
        if continuation is None:  # joined before
            return self._ok
        if self._error is not None or not self._ok:
            continuation.close()
            if self._error is not None:
                raise self._error
            return False
        self.size = continuation.size
        self._stream.adopt(continuation)
        return True

    def cancel(self) -> None:
        """Wait for the child and the waiter without raising (the workbook is abandoned; the child
        is not killed: its pid may be another process's once reaped)."""
        self._waiter.join()
        if self._continuation is not None:
            self._continuation.close()
            self._continuation = None
