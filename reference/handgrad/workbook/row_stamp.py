"""Rows that repeat: one step row of the Training sheet recorded once, then stamped on the rows
below it with its references moved.

A Training row t ≥ 2 differs from row t − 1 only in its row numbers (its references to its own row
and to the row above) and in its plain numbers (the step, the data rows, torch's L). Building
1,000 rows formula by formula was most of the time the xor workbook spent laying out its sheets;
a :class:`RowTemplate` holds the cells and checks of one row with those two row numbers as
placeholders, and :meth:`RowTemplate.stamp` writes them on another row. The Training sheet uses a
template only after it reproduced a row built formula by formula (:func:`RowTemplate.matches`),
so a reference the placeholders would miss shows as a mismatch and the slow way is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from handgrad.workbook import formulas as fx
from handgrad.workbook.grid import Grid

# A cell reference (A12, $A$12, A$12), not part of a name (x_data, LOG10(...), beta_1)
_REFERENCE = re.compile(r"(?<![A-Za-z0-9_.])(\$?[A-Z]{1,3}\$?)(\d+)(?![0-9A-Za-z_(])")


@dataclass
class RowRecorder:
    """Stands in for a :class:`Grid` while one row is written: the ``set`` and ``check`` calls,
    in order (the order fixes the workbook's style numbering, so a replay keeps the file's bytes)."""

    row: int
    step: int
    cells: list[tuple[int, object, str | None, str | None]] = field(default_factory=list)
    checks: list[tuple[int, int, str, int]] = field(default_factory=list)  # col, step, term, flat

    def set(
        self, row: int, col: int, value: object, style: str | None = None, number_format: str | None = None
    ) -> None:
        if row != self.row:
            raise ValueError(f"a recorder of row {self.row} was asked to set row {row}")
        self.cells.append((col, value, style, number_format))

    def check(self, row: int, col: int, step: int, term: str, index: int) -> None:
        if row != self.row:
            raise ValueError(f"a recorder of row {self.row} was asked to check row {row}")
        self.checks.append((col, int(step), str(term), int(index)))

    def replay(self, grid: Grid) -> None:
        for col, value, style, number_format in self.cells:
            grid.set(self.row, col, value, style, number_format)
        for col, step, term, index in self.checks:
            grid.check(self.row, col, step, term, index)


@dataclass
class RowTemplate:
    """A recorded row whose formulas are ``str.format`` patterns of its row (``r``) and the row
    above (``p``); its plain cells take each row's own numbers."""

    cells: list[tuple[int, str | None, str | None, str | None]]  # col, pattern (None: plain), style, format
    checks: list[tuple[int, int, str, int]]  # col, step − the row's step, term, flat
    verified: bool = False  # it reproduced a row built formula by formula

    @classmethod
    def of(cls, recorded: RowRecorder) -> RowTemplate:
        row = recorded.row

        def placeholder(match: re.Match[str]) -> str:
            number = int(match.group(2))
            if number == row:
                return match.group(1) + "{r}"
            if number == row - 1:
                return match.group(1) + "{p}"
            return match.group(0)

        cells = []
        for col, value, style, number_format in recorded.cells:
            if isinstance(value, str):
                escaped = value.replace("{", "{{").replace("}", "}}")
                cells.append((col, _REFERENCE.sub(placeholder, escaped), style, number_format))
            else:
                cells.append((col, None, style, number_format))
        checks = [(col, step - recorded.step, term, flat) for col, step, term, flat in recorded.checks]
        return cls(cells, checks)

    def stamp(self, target: Grid | RowRecorder, row: int, step: int, plain: dict[int, object]) -> None:
        """Write the row on ``row`` as step ``step``; ``plain``: each plain cell's value by column."""
        for col, pattern, style, number_format in self.cells:
            value = plain[col] if pattern is None else fx.formula(pattern.format(r=row, p=row - 1))
            target.set(row, col, value, style, number_format)
        for col, offset, term, flat in self.checks:
            target.check(row, col, step + offset, term, flat)

    def matches(self, built: RowRecorder, plain: dict[int, object]) -> bool:
        """Whether stamping gives exactly the row ``built`` formula by formula."""
        stamped = RowRecorder(built.row, built.step)
        self.stamp(stamped, built.row, built.step, plain)
        return stamped.cells == built.cells and stamped.checks == built.checks
