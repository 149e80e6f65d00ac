"""workbook/row_stamp.py: a recorded row stamped on another row moves only the references to its
own row and the row above; names, functions, constants and other rows stay."""

from __future__ import annotations

from handgrad.workbook.grid import Grid
from handgrad.workbook.row_stamp import RowRecorder, RowTemplate


def _recorded(row: int, formula: str) -> RowRecorder:
    recorded = RowRecorder(row, step=2)
    recorded.set(row, 1, 2, "header")
    recorded.set(row, 3, formula, "forward")
    recorded.check(row, 3, 1, "dense1.W_next", 4)
    return recorded


def test_references_to_the_row_and_the_row_above_move_and_nothing_else() -> None:
    formula = "=LOG10(B12)*beta_1+$C$12+D$11+INDEX(x_data,E12,2)-SUM(F12:G12)+$H$5+ATAN2(A11,1)+{1,12}"
    template = RowTemplate.of(_recorded(12, formula))
    grid = Grid("t")
    template.stamp(grid, 40, 30, {1: 30})
    expected = "=LOG10(B40)*beta_1+$C$40+D$39+INDEX(x_data,E40,2)-SUM(F40:G40)+$H$5+ATAN2(A39,1)+{1,12}"
    assert grid.cells[(40, 3)].value == expected
    assert grid.cells[(40, 1)].value == 30  # a plain cell takes the row's own number
    assert grid.cells[(40, 3)].style == "forward"
    assert grid.checks[(40, 3)] == (29, "dense1.W_next", 4)  # the step before, as recorded


def test_a_template_matches_only_a_row_it_reproduces() -> None:
    template = RowTemplate.of(_recorded(12, "=B12+C11"))
    assert template.matches(_recorded(13, "=B13+C12"), {1: 2})
    # an absolute reference that happened to name the template's row would have moved
    template = RowTemplate.of(_recorded(12, "=B12+$C$12"))
    assert not template.matches(_recorded(13, "=B13+$C$12"), {1: 2})
