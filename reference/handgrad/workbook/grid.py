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

from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np
from openpyxl.utils import get_column_letter


def address(row: int, col: int, *, absolute: bool = False) -> str:
    """``(2, 3) -> 'C2'`` (``'$C$2'`` when absolute); rows and columns count from 1."""
    letter = get_column_letter(col)
    return f"${letter}${row}" if absolute else f"{letter}{row}"


def area(top: int, left: int, rows: int, cols: int, *, absolute: bool = False) -> str:
    """The range of a rows × cols block whose top-left cell is (top, left)."""
    first = address(top, left, absolute=absolute)
    if rows == 1 and cols == 1:
        return first
    return f"{first}:{address(top + rows - 1, left + cols - 1, absolute=absolute)}"


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

    def set(
        self, row: int, col: int, value: object, style: str | None = None, number_format: str | None = None
    ) -> None:
        self.cells[(row, col)] = Cell(value, style, number_format)

    def text(self, row: int, col: int, value: str, style: str | None = None) -> None:
        """Text that came from a user: it is written as text, never as a formula."""
        self.cells[(row, col)] = Cell(str(value), style, None, is_text=True)

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
        cells = self.cells
        for row, numbers in enumerate(array.tolist(), start=top):  # Python floats, every bit
            for col, number in enumerate(numbers, start=left):
                cells[(row, col)] = Cell(number, style, number_format)
        return area(top, left, array.shape[0], array.shape[1], absolute=True)

    def name(self, name: str, top: int, left: int, rows: int = 1, cols: int = 1) -> None:
        """Give a block a defined name; names must never read as cell addresses (``W_1``, not ``W1``)."""
        self.defined_names[name] = area(top, left, rows, cols, absolute=True)

    def check(self, row: int, col: int, step: int, term: str, index: int) -> None:
        """Record that the formula at (row, col) computes element ``index`` (flat, C order) of
        ``term`` at ``step``."""
        self.checks[(row, col)] = (int(step), str(term), int(index))

    @property
    def max_row(self) -> int:
        return max(self.cells, default=(0, 0))[0]

    @property
    def max_col(self) -> int:
        return max(map(itemgetter(1), self.cells), default=0)
