"""A sheet laid out in memory as cells by (row, column), then streamed row by row.

The workbook is written with openpyxl in write-only mode (rows must be appended in order, so
memory stays flat for the long Trace sheet); sheets with cells at arbitrary places (Walkthrough,
Training, Summary) are first laid out as a :class:`Grid`, then written by
:func:`handgrad.workbook.writer.write_grid`.

A cell value is a number, a text, a formula string starting with ``=`` (only ever built by
handgrad itself: text from a user goes through :meth:`Grid.text`, which can never become a
formula), or an ``openpyxl.worksheet.formula.ArrayFormula``. ``style`` is a key of
:data:`handgrad.workbook.styles.STYLES` (phase colours, headers, inputs).
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter

import numpy as np
from openpyxl.utils import get_column_letter

_LETTERS = [""] + [get_column_letter(col) for col in range(1, 703)]  # A..ZZ, the common case


def address(row: int, col: int, *, absolute: bool = False) -> str:
    """``(2, 3) -> 'C2'`` (``'$C$2'`` when absolute); rows and columns count from 1."""
    letter = _LETTERS[col] if 0 < col < len(_LETTERS) else get_column_letter(col)
    return f"${letter}${row}" if absolute else f"{letter}{row}"


def area(top: int, left: int, rows: int, cols: int, *, absolute: bool = False) -> str:
    """The range of a rows × cols block whose top-left cell is (top, left)."""
    first = address(top, left, absolute=absolute)
    if rows == 1 and cols == 1:
        return first
    return f"{first}:{address(top + rows - 1, left + cols - 1, absolute=absolute)}"


@contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a workbook is laid out and written.

    A deep Walkthrough holds hundreds of thousands of cells (none in a reference cycle); each
    collection the allocations trigger walks all of them again, which more than doubles the
    time to lay the sheet out and write it. Reference counting still frees everything; the
    collector is enabled again after (if it was)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


Position = tuple[int, int]  # (row, col), counted from 1


@dataclass(slots=True)  # hundreds of thousands on a deep Walkthrough: slots make them cheap
class Cell:
    value: object
    style: str | None = None
    number_format: str | None = None
    is_text: bool = False  # user text: written as a string cell even if it starts with "="
    cached: float | None = None  # a formula's value stored beside it (workbook/cached.py)


@dataclass
class Grid:
    title: str
    cells: dict[tuple[int, int], Cell] = field(default_factory=dict)
    widths: dict[int, float] = field(default_factory=dict)
    defined_names: dict[str, str] = field(default_factory=dict)  # name -> range on this sheet
    freeze: str | None = None  # e.g. "B2"
    hidden: bool = False
    # (row, col) of a formula cell -> (step, term name, flat index into the term's value): what the
    # cell computes, so that a recomputed sheet can be checked against the hand side's numbers
    checks: dict[tuple[int, int], tuple[int, str, int]] = field(default_factory=dict)
    not_live: str | None = None  # a live sheet written without formulas: why, in the user's words
    # |Δ| cells by block: (the |Δ| cells, their formulas, the hand cells, the torch cells), so
    # that workbook/cached.py finds the value of |hand − torch| without reading the formula back
    differences: list[tuple[list[Position], list[str], list[Position], list[Position]]] = field(
        default_factory=list
    )

    def set(
        self, row: int, col: int, value: object, style: str | None = None, number_format: str | None = None
    ) -> None:
        self.cells[(row, col)] = Cell(value, style, number_format)

    def set_many(
        self, positions: Iterable[Position], values: Iterable[object], style: str | None = None
    ) -> None:
        """:meth:`set` of each value at its (row, col), all in one ``style``."""
        self.cells.update(zip(positions, map(Cell, values, repeat(style)), strict=True))

    def text(self, row: int, col: int, value: str, style: str | None = None) -> None:
        """Text that came from a user: it is written as text, never as a formula."""
        self.cells[(row, col)] = Cell(str(value), style, None, is_text=True)

    def texts(self, positions: Iterable[Position], values: Iterable[str], style: str | None = None) -> None:
        """:meth:`text` of each value at its (row, col), all in one ``style``."""
        cells = map(Cell, map(str, values), repeat(style), repeat(None), repeat(True))
        self.cells.update(zip(positions, cells, strict=True))

    def block(
        self,
        top: int,
        left: int,
        values: np.ndarray,
        style: str | None = None,
        number_format: str | None = None,
    ) -> str:
        """Write a 2-D block of plain numbers (1-D becomes a column); return its absolute range."""
        array = np.asarray(values, dtype=float)
        array = array.reshape(-1, 1) if array.ndim < 2 else array
        rows, cols = array.shape
        positions = [(row, col) for row in range(top, top + rows) for col in range(left, left + cols)]
        numbers = array.ravel().tolist()  # Python floats, every bit
        cells = map(Cell, numbers, repeat(style), repeat(number_format))
        self.cells.update(zip(positions, cells, strict=True))
        return area(top, left, array.shape[0], array.shape[1], absolute=True)

    def name(self, name: str, top: int, left: int, rows: int = 1, cols: int = 1) -> None:
        """Give a block a defined name; names must never read as cell addresses (``W_1``, not ``W1``)."""
        self.defined_names[name] = area(top, left, rows, cols, absolute=True)

    def check(self, row: int, col: int, step: int, term: str, index: int) -> None:
        """Record that the formula at (row, col) computes element ``index`` (flat, C order) of
        ``term`` at ``step``."""
        self.checks[(row, col)] = (int(step), str(term), int(index))

    def check_many(self, positions: Iterable[Position], step: int, term: str, indices: Iterable[int]) -> None:
        """:meth:`check` of each (row, col) in ``positions``, computing element ``indices[k]``."""
        step, term = int(step), str(term)
        found = zip(repeat(step), repeat(term), map(int, indices), strict=False)  # as long as indices
        self.checks.update(zip(positions, found, strict=True))

    def difference(
        self, cells: list[Position], formulas: list[str], hand: list[Position], torch: list[Position]
    ) -> None:
        """Set |Δ| formulas (style ``delta``) and record that cell k is |hand[k] − torch[k]|."""
        self.set_many(cells, formulas, "delta")
        self.differences.append((cells, formulas, hand, torch))

    @property
    def max_row(self) -> int:
        return max(map(itemgetter(0), self.cells), default=0)

    @property
    def max_col(self) -> int:
        return max(map(itemgetter(1), self.cells), default=0)
