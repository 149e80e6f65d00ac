"""Cached values: the number each formula cell stores beside its formula.

A reader that does not recompute (a file preview, openpyxl ``data_only``, pandas) shows a cell's
stored ``<v>``. handgrad stores the hand side's number there: a cell that computes a term
(``grid.checks``: step, term, element) gets that element of the hand trace — the number
``scripts/recalc.py`` proves the formula reproduces in LibreOffice. The few formula cells that
compute no term (|Δ| = ABS(hand − torch), a copy of an input cell, an INDEX into the data, the
clip coefficient MIN(max_norm/(‖g‖ + 1e-6), 1)) are evaluated here from the cells they read, for
those forms only; any other formula is left
without a value and counted (:func:`fill_cached` returns the count) so a test can insist on none.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
from openpyxl.utils.cell import column_index_from_string, range_boundaries

from handgrad.workbook.grid import Cell, Grid

_UNSEEN = object()
_COLUMNS: dict[str, int] = {}  # column letters -> index, as met

HandValues = Callable[[int, str], "np.ndarray | None"]  # (step, term) -> the term's values, flat

_REF = r"\$?([A-Z]{1,3})\$?(\d+)"
_ABS = re.compile(rf"^=ABS\({_REF}-{_REF}\)$")
_COPY = re.compile(rf"^={_REF}$")
_INDEX = re.compile(rf"^=INDEX\((\w+),{_REF},(\d+)\)$")
_CLIP = re.compile(rf"^=MIN\((\w+)/\({_REF}\+([0-9.e+-]+)\),1\)$")  # clip by norm's coefficient


def fill_cached(grid: Grid, hand: HandValues) -> int:
    """Store a cached value on every formula cell of ``grid`` it can; return how many it could not."""
    terms: dict[tuple[int, str], list[float] | None] = {}  # asked once per term, not per cell
    cells = grid.cells
    get = cells.get
    step = term = values = None
    for position, (at_step, at_term, index) in grid.checks.items():
        if at_term != term or at_step != step:  # the checks of a block come together
            step, term = at_step, at_term
            values = terms.get((step, term), _UNSEEN)
            if values is _UNSEEN:
                found = hand(step, term)
                values = None if found is None else np.ravel(found).astype(float).tolist()
                terms[(step, term)] = values
        if values is None or index >= len(values):
            continue
        cell = get(position)
        if cell is None:  # an element of an array formula's range: a cell of its own for the value
            cell = cells[position] = Cell(None)
        cell.cached = values[index]
    for differences, formulas, hands, torches in grid.differences:  # |Δ|: most of the formulas
        for position, formula, at_hand, at_torch in zip(differences, formulas, hands, torches, strict=True):
            cell = get(position)
            if cell is None or cell.value is not formula or cell.cached is not None:
                continue  # written over since: read back below like any other formula
            a, b = _number(get(at_hand)), _number(get(at_torch))
            if a is not None and b is not None:
                cell.cached = abs(a - b)
    pending = [
        (position, cell)
        for position, cell in cells.items()
        if cell.cached is None and type(cell.value) is str and cell.value[:1] == "=" and not cell.is_text
    ]
    while pending:
        left = []
        for position, cell in pending:
            formula = str(cell.value)
            if match := _ABS.match(formula):  # |Δ| = |hand − torch|: most of them, so inline
                a, b = _value(grid, *match.group(1, 2)), _value(grid, *match.group(3, 4))
                value = None if a is None or b is None else abs(a - b)
            else:
                value = _evaluate(grid, formula)
            if value is None:
                left.append((position, cell))
            else:
                cell.cached = value
        if len(left) == len(pending):
            break
        pending = left
    return len(pending)


def _value(grid: Grid, col: str, row: str) -> float | None:
    return _number(grid.cells.get((int(row), _COLUMNS.get(col) or _column(col))))


def _number(cell: Cell | None) -> float | None:
    """The number a cell holds (its cached value if a formula), None if none."""
    if cell is None:
        return None
    if cell.cached is not None:
        return cell.cached
    value = cell.value
    if type(value) is float:
        return value
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    return None


def _column(letters: str) -> int:
    found = _COLUMNS[letters] = column_index_from_string(letters)
    return found


def _evaluate(grid: Grid, formula: str) -> float | None:
    """The value of ``=ABS(a-b)``, ``=a`` or ``=INDEX(name,r,k)`` from the cells read, else None."""
    if match := _ABS.match(formula):
        a, b = _value(grid, *match.group(1, 2)), _value(grid, *match.group(3, 4))
        return None if a is None or b is None else abs(a - b)
    if match := _COPY.match(formula):
        return _value(grid, *match.group(1, 2))
    if match := _CLIP.match(formula):
        norm = _named(grid, match.group(1))
        total = _value(grid, *match.group(2, 3))
        if norm is None or total is None:
            return None
        return min(norm / (total + float(match.group(4))), 1.0)
    if match := _INDEX.match(formula):
        where = grid.defined_names.get(match.group(1))
        row = _value(grid, *match.group(2, 3))
        if where is None or row is None:
            return None
        left, top, _, _ = range_boundaries(where.replace("$", ""))
        cell = grid.cells.get((top + int(row) - 1, left + int(match.group(4)) - 1))
        if cell is None or not isinstance(cell.value, (int, float)):
            return None
        return float(cell.value)
    return None


def _named(grid: Grid, name: str) -> float | None:
    """The number in a one-cell defined name (``max_norm``)."""
    where = grid.defined_names.get(name)
    if where is None:
        return None
    left, top, right, bottom = range_boundaries(where.replace("$", ""))
    if (left, top) != (right, bottom):
        return None
    cell = grid.cells.get((top, left))
    return float(cell.value) if cell is not None and isinstance(cell.value, (int, float)) else None
