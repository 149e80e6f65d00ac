"""The configuration table of the Parameters sheet: each option as asked for and as torch ran with.

The rows are the report's configuration block (:mod:`handgrad.harness.configuration`): what the
command line (or the Python call) asked for, beside what the torch objects report they hold
(optimizer ``param_groups``, loss-module attributes, the scheduler's ``state_dict()``, the clipping
call, layer modules). Values are written as text, exactly as compared (``0.1`` is the float 0.1).
"""

from __future__ import annotations

from handgrad.harness import Report
from handgrad.harness.configuration import show
from handgrad.workbook.grid import Grid


def add_configuration_table(grid: Grid, row: int, report: Report) -> int:
    """Write the table from ``row`` down; return the first free row after it."""
    grid.set(row, 1, "Configuration: asked for, and what torch ran with", "subtitle")
    if report.configuration is None:
        grid.text(row + 1, 1, "not read back: this run has no torch twin", "note")
        return row + 3
    failures = len(report.configuration_failures)
    verdict = "every option as asked" if not failures else f"{failures} options differ"
    note = f"Read back from the torch objects after they were built; compared exactly: {verdict}."
    grid.text(row + 1, 1, note, "note")
    row += 2
    for col, title in enumerate(("option", "asked for", "torch ran with", "ok"), start=1):
        grid.set(row, col, title, "header")
    for check in report.configuration:
        row += 1
        grid.text(row, 1, check.option)
        grid.text(row, 2, show(check.asked))
        grid.text(row, 3, show(check.torch))
        grid.set(row, 4, "ok" if check.ok else "FAIL", "ok" if check.ok else "fail")
    return row + 2
