"""Helpers of the sliced live sheets (the makemore and transformer walkthroughs): a slice of a run
too large for live formulas, laid out with :class:`handgrad.workbook.blocks.Sheet` (its blocks,
legend and torch/|Δ| columns), plus the intermediate blocks no side traces (μ, σ², x̂, Q, K, …).

The hand side's numbers come from the run's recorded traces (``captured``: hand and torch traces
of the walkthrough step and the one before it), never from a re-run of hand/.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from handgrad.contract.spec import SpecError
from handgrad.harness import Experiment
from handgrad.workbook import formulas as fx
from handgrad.workbook.blocks import LEFT, Block, Captured, Sheet, trace_before, write_legend
from handgrad.workbook.grid import Grid

Cells = Callable[[int, int], str]


def float64_reason(experiment: Experiment) -> str | None:
    """Why a float32 run gets no live sheet: a spreadsheet computes in float64."""
    if str(np.dtype(experiment.dtype)) != "float64":
        return f"a spreadsheet computes in float64 and this run is {experiment.dtype} (see the Trace)"
    return None


def start_sheet(
    title: str, step: int, width: int, captured: Captured, lines: list[str]
) -> tuple[Grid, Sheet]:
    """A Grid with the title, the note lines and the legend, and its :class:`Sheet` (blocks are
    ``width`` columns wide; torch's values and |Δ| to their right)."""
    if step not in captured:
        raise SpecError("walkthrough", f"step {step} was not captured")
    hand, torch = captured[step]
    grid = Grid(title)
    grid.widths[1] = 44
    sheet = Sheet(grid, step, width, hand, torch)
    for col in range(LEFT, sheet.delta_left + width):
        grid.widths[col] = 13
    for row, line in enumerate(lines, start=1):
        grid.text(row, 1, line, "title" if row == 1 else "note")
    legend = len(lines) + 1
    write_legend(grid, legend)
    sheet.top = legend + 2
    return grid, sheet


def section(sheet: Sheet, text: str) -> None:
    sheet.grid.text(sheet.top, 1, text, "title")
    sheet.top += 1


def scalar_input(sheet: Sheet, label: str, value: float, name: str) -> str:
    """A named input cell (``name``: a defined name that never reads as an address)."""
    sheet.grid.text(sheet.top, 1, label, "header")
    sheet.grid.set(sheet.top, LEFT, float(value), "input")
    sheet.grid.name(name, sheet.top, LEFT)
    sheet.top += 1
    return name


def helper(
    sheet: Sheet,
    title: str,
    phase: str,
    cell: Cells,
    shape: tuple[int, int],
    col_labels: list[str],
    row_labels: list[str],
    values: np.ndarray | None = None,
) -> Block:
    """A block of formulas for an intermediate that neither side traces (torch computes it inside
    a fused kernel): no torch values beside it; the checked blocks after it read it. ``values``
    (the same computation in NumPy from the same input cells) are stored as the cells' cached
    values, what a reader that does not recompute shows (tests compare them with LibreOffice)."""
    sheet.title(f"{title}  (not traced: read by the blocks below)", phase, torch=False)
    sheet.labels(sheet.top + 1, col_labels, row_labels, shape[0], torch=False)
    block = Block(sheet.top + 2, LEFT, *shape)
    for i in range(shape[0]):
        for j in range(shape[1]):
            sheet.grid.set(block.top + i, block.left + j, fx.formula(cell(i, j)), phase)
            if values is not None:
                sheet.grid.cells[(block.top + i, block.left + j)].cached = float(values[i, j])
    sheet.top = block.top + shape[0] + 1
    return block


def checked(
    sheet: Sheet,
    term: str,
    title: str,
    phase: str,
    cell: Cells,
    indices: np.ndarray,
    col_labels: list[str],
    row_labels: list[str],
) -> Block:
    """A block computing the slice ``indices`` (rows × cols flat indices) of a traced term."""
    rows, cols = indices.shape
    cells = {(i, j): cell(i, j) for i in range(rows) for j in range(cols)}
    return sheet.computed(term, title, phase, cells, (rows, cols), col_labels, row_labels, indices=indices)


def before(
    experiment: Experiment, step: int, captured: Captured, name: str, initial: np.ndarray
) -> np.ndarray:
    """A traced value as it stood before ``step``: ``initial`` at step 1, else the term ``name`` of
    step − 1's hand trace (the writer captures k − 1 with every walkthrough step k)."""
    previous = trace_before(step, captured)
    if previous is None:
        return np.asarray(initial, dtype=float)
    return np.asarray(previous.value(name), dtype=float)


def labels(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix} {start + j + 1}" for j in range(count)]
