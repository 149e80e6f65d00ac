"""A big grid's rows serialised in a forked child process while the writer goes on.

Serialising a deep Walkthrough's 400,000 cells (:func:`handgrad.workbook.xlsx.grid_row`) is
pure Python: a thread would hold the GIL the whole time. On Linux the writer forks instead: the
child, a copy of the process, writes the rows' XML to an unnamed temporary file and exits; the
parent meanwhile lays out and serialises the other sheets, and a waiter thread (blocked in
``waitpid`` and file reads, which release the GIL) hands the child's rows to the sheet's
deflate stream when the child is done.

Whatever the parent needs is settled before the fork, so that the child changes nothing the
parent must know: the cells' style indices (the caller asks the workbook for them first) and
every text the rows put into the shared string table, added by :func:`register_texts` in the
order the rows would add them. The child checks that its rows found every text there; if not,
or if it fails in any other way, it leaves nothing in the stream and :meth:`ForkedRows.join`
says so: the caller then serialises the rows itself, which gives the same bytes.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

ENABLED = sys.platform.startswith("linux") and hasattr(os, "fork")
MIN_CELLS = 50_000  # a smaller grid is serialised faster than a process forks and hands it back
CHUNK = 1 << 20

Rows = Sequence[tuple[int, list[tuple[int, Any]]]]  # (row, [(col, cell), ...] by column), by row


def texts(rows: Rows, longest: int) -> Iterator[str]:
    """The texts ``rows`` put into the shared string table, in the order they put them: a text
    cell's text (cut to ``longest`` characters as :func:`~handgrad.workbook.xlsx.cell_xml` cuts
    it) and a non-finite number's ``nan``/``inf``/``-inf``, as
    :func:`~handgrad.workbook.xlsx.cell_xml` writes them."""
    for _, items in rows:
        for _, cell in items:
            value = cell.value
            kind = type(value)
            if (kind is float and value - value == 0) or value is None:  # most cells: no text
                continue
            if isinstance(value, str):
                if cell.is_text or value[:1] != "=" or len(value) < 2:
                    yield value if len(value) <= longest else value[: longest - 1] + "…"
            elif isinstance(value, (float, np.floating)) and not math.isfinite(value):
                yield "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


class ForkedRows:
    """The XML of ``rows`` made by ``serialise(row, items) -> bytes`` in a forked child; each
    piece goes to ``add`` (in order, from a waiter thread) once the child has exited cleanly.

    ``strings`` (anything with a length: the shared string table) must not grow in the child:
    its texts are registered before (see :func:`texts`)."""

    def __init__(
        self,
        rows: Rows,
        serialise: Callable[[int, list[tuple[int, Any]]], bytes],
        strings: Any,
        add: Callable[[bytes], None],
    ) -> None:
        self.rows = rows
        self.size = 0  # bytes handed to ``add``
        self._add = add
        self._handed = False
        self._error: BaseException | None = None
        self._file = tempfile.TemporaryFile(prefix="handgrad-rows-")
        with warnings.catch_warnings():
            # Python 3.12+ warns that a multi-threaded process may deadlock in a forked child;
            # this child takes no lock another thread could hold (it imports nothing, touches
            # no stream but its own file and runs no thread)
            warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
            try:
                self._pid = os.fork()
            except OSError:
                self._file.close()
                raise
        if self._pid == 0:  # the child: write the rows, exit without running anything else
            code = 1
            try:
                before = len(strings)
                with os.fdopen(os.dup(self._file.fileno()), "wb", buffering=CHUNK) as sink:
                    for row, items in rows:
                        sink.write(serialise(row, items))
                code = 0 if len(strings) == before else 3
            finally:
                os._exit(code)
        self._waiter = threading.Thread(target=self._wait, name="handgrad-rows-waiter", daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        try:
            try:
                _, status = os.waitpid(self._pid, 0)
            except ChildProcessError:  # reaped by someone else (SIGCHLD ignored): its word is lost
                return
            if os.waitstatus_to_exitcode(status) != 0:
                return
            self._file.seek(0)
            self._handed = True  # from here on the stream holds the child's rows (or part of them)
            while data := self._file.read(CHUNK):
                self.size += len(data)
                self._add(data)
        except BaseException as error:  # raised again by join, in the writer's thread
            self._error = error
        finally:
            self._file.close()

    def join(self) -> bool:
        """Wait for the child and the hand-over: True when the rows are in the stream, False when
        the child failed before any was (the caller serialises them itself)."""
        self._waiter.join()
        if self._error is not None:
            raise self._error
        return self._handed

    def cancel(self) -> None:
        """Wait for the child and the waiter without raising (the workbook is abandoned; the child
        is not killed: its pid may be another process's once reaped)."""
        self._waiter.join()
