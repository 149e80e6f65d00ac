"""The Summary sheet: the verdict, how the run was configured, and each term's worst error.

Laid out as a :class:`Grid`; :func:`decorate` then adds what a grid does not carry: the conditional
formats of the per-term table (red where a term's max |Δ| passes its tolerance) and the native
charts, which read the hidden "Chart data" sheet: the loss per step (hand and torch), the
gradient norm of each layer per step, and the step size per step (the η in force and the
effective step ‖θ′ − θ‖/‖∂L/∂θ‖).
"""

from __future__ import annotations

from dataclasses import dataclass

from openpyxl.chart import Reference, ScatterChart, Series
from openpyxl.formatting.rule import Rule
from openpyxl.styles.differential import DifferentialStyle

from handgrad.harness import Experiment, Report
from handgrad.workbook.grid import Grid, address
from handgrad.workbook.readme import WorkbookFacts
from handgrad.workbook.styles import CF_FAIL, CF_OK, SCIENTIFIC

TITLE = "Summary"
CHART_DATA_TITLE = "Chart data"
TERM_COLUMNS = (
    "term",
    "symbol",
    "phase",
    "max |Δ|",
    "rel (element-wise)",
    "rel (normwise)",
    "rtol",
    "ok",
    "failing steps",
    "worst step",
    "hand source",
    "torch source",
)
CHART_COLUMN = 13  # the charts sit right of the tables, from column M
DIAGNOSTICS_TOP = 66  # the per-layer diagnostic charts (deep) start below the three run charts


@dataclass(frozen=True)
class SummaryLayout:
    """Where the per-term table landed (first and last data row), for :func:`decorate`."""

    table_first: int
    table_last: int


def _value(grid: Grid, row: int, col: int, value: object, style: str | None = None) -> None:
    """A config or report value: text from a user stays text; numbers stay numbers."""
    if isinstance(value, bool):
        grid.text(row, col, "yes" if value else "no", style)
    elif isinstance(value, (int, float)):
        grid.set(row, col, value, style)
    else:
        grid.text(row, col, str(value), style)


def summary_grid(
    experiment: Experiment, report: Report, facts: WorkbookFacts | None = None
) -> tuple[Grid, SummaryLayout]:
    grid = Grid(TITLE)
    grid.widths.update({1: 22, 2: 16, 3: 11, 4: 12, 5: 12, 6: 12, 7: 9, 8: 9, 9: 9, 10: 12, 11: 12})
    grid.set(1, 1, f"handgrad — {report.scenario}: the hand calculation checked against torch", "title")

    banner = "banner_ok" if report.ok else "banner_fail"
    verdict = ("MATCH — " if report.ok else "") + report.verdict()
    grid.text(2, 1, verdict, banner)
    for col in range(2, len(TERM_COLUMNS) + 1):
        grid.set(2, col, None, banner)
    row = 3
    if report.stopped:
        grid.text(
            row,
            1,
            f"Stopped early: {report.stopped} (the workbook holds steps 1–{report.steps_run}).",
            "fail",
        )
        row += 1
    facts = facts or WorkbookFacts()
    grid.text(
        row,
        1,
        f"{report.steps_run} of {report.steps_requested} steps run; sheets: {facts.sheet_list()}.",
        "note",
    )
    row += 1
    for text in [facts.trace_note, *facts.not_live()]:
        if text:
            grid.text(row, 1, text, "note")
            row += 1
    row += 1
    row = _predictions(grid, row, report)

    grid.set(row, 1, "Run configuration", "subtitle")
    row += 1
    for key, value in report.config.items():
        grid.text(row, 1, str(key), "label")
        _value(grid, row, 2, value)
        row += 1
    row += 1

    grid.set(row, 1, "Tolerance", "subtitle")
    row += 1
    tol = report.tolerance
    grid.text(row, 1, "rule", "label")
    grid.text(
        row,
        2,
        "each element |hand − torch| ≤ atol·max|torch| + rtol·|torch| (max over the term at that "
        "step), and each term ‖hand − torch‖₂ ≤ rtol·‖torch‖₂; values below the smallest normal "
        "number count as 0",
    )
    grid.text(row + 1, 1, "dtype", "label")
    grid.text(row + 1, 2, report.dtype)
    grid.text(row + 2, 1, "atol", "label")
    grid.set(row + 2, 2, tol.atol, None, SCIENTIFIC)
    grid.text(row + 3, 1, "rtol", "label")
    grid.set(row + 3, 2, tol.rtol, None, SCIENTIFIC)
    grid.text(row + 4, 1, "smallest normal", "label")
    grid.set(row + 4, 2, tol.tiny, None, SCIENTIFIC)
    row += 6

    grid.set(row, 1, "Library versions", "subtitle")
    row += 1
    for key, value in report.versions.items():
        grid.text(row, 1, str(key), "label")
        grid.text(row, 2, str(value))
        row += 1
    row += 1

    grid.set(row, 1, "First divergence", "subtitle")
    row += 1
    first = report.first
    if first is None:
        grid.text(row, 1, "none: every term agrees at every step run", "ok")
        row += 2
    else:
        grid.text(row, 1, first.message(), "fail")
        row += 1
        fields: list[tuple[str, object]] = [
            ("step", first.step),
            ("term", first.term),
            ("symbol", first.symbol),
            ("phase", first.phase),
            ("index", str(list(first.index))),
            ("hand", first.hand),
            ("torch", first.torch),
            ("|Δ|", first.abs_error),
            ("rel (element-wise)", first.rel_error),
            ("rel (normwise)", first.norm_rel),
            ("elements differing", f"{first.mismatched} of {first.total}"),
            ("term before", first.previous_term or "(first term of the step)"),
        ]
        for key, value in fields:
            grid.text(row, 1, key, "label")
            _value(grid, row, 2, value)
            row += 1
        row += 1

    grid.set(row, 1, "Every term, worst over all steps", "subtitle")
    grid.text(
        row + 1,
        1,
        "rel (element-wise) = max |Δᵢ| / ((atol/rtol)·max|torch| + |torchᵢ|); rel (normwise) = "
        "‖Δ‖₂/‖torch‖₂; each the largest over the steps, red where it passes rtol.",
        "note",
    )
    row += 2
    for col, name in enumerate(TERM_COLUMNS, start=1):
        grid.set(row, col, name, "header")
    grid.freeze = None
    first_row = row + 1
    for stats in report.terms.values():
        row += 1
        grid.text(row, 1, stats.name)
        grid.text(row, 2, stats.symbol)
        grid.text(row, 3, stats.phase, stats.phase if stats.phase in _PHASE_STYLES else None)
        grid.set(row, 4, stats.max_abs, None, SCIENTIFIC)
        grid.set(row, 5, stats.elem_rel, None, SCIENTIFIC)
        grid.set(row, 6, stats.norm_rel, None, SCIENTIFIC)
        grid.set(row, 7, tol.rtol, None, SCIENTIFIC)
        grid.text(
            row, 8, "ok" if not stats.failing_steps else "FAIL", "ok" if not stats.failing_steps else "fail"
        )
        grid.set(row, 9, stats.failing_steps)
        grid.set(row, 10, stats.worst_step)
        grid.text(row, 11, stats.hand_source)
        grid.text(row, 12, stats.torch_source)
    return grid, SummaryLayout(first_row, max(row, first_row))


def _predictions(grid: Grid, row: int, report: Report) -> int:
    """The final-predictions table (small data sets): did the network learn the task? Numbers
    where each row has one output, else the console's text. Returns the next free row."""
    predictions = report.predictions
    if predictions is None:
        return row
    grid.set(row, 1, "Final predictions: every row of the data at the last step's weights", "subtitle")
    row += 1
    for col, name in enumerate(("x", "target", "ŷ (hand)", "ŷ (torch)", "|ŷ − target|"), start=1):
        grid.set(row, col, name, "header")
    single = predictions.y.shape[1] == 1
    for i, texts in enumerate(predictions.rows()):
        row += 1
        grid.text(row, 1, texts[0])
        if not single:
            for col, text in enumerate(texts[1:], start=2):
                grid.text(row, col, text)
            continue
        numbers = (predictions.y, predictions.hand, predictions.torch, abs(predictions.hand - predictions.y))
        for col, values in enumerate(numbers, start=2):
            grid.set(row, col, float(values[i, 0]))
    return row + 2


_PHASE_STYLES = ("forward", "loss", "backward", "update", "state", "diagnostic")


def decorate(
    sheet: object,
    chart_sheet: object,
    layout: SummaryLayout,
    points: int,
    layers: list[str],
    stride: int,
) -> None:
    """Conditional formats of the per-term table and the charts (data on ``chart_sheet``): loss,
    gradient norm per layer, step size (η in force and ‖θ′ − θ‖/‖∂L/∂θ‖, log scale)."""
    first, last = layout.table_first, layout.table_last
    fail = DifferentialStyle(**CF_FAIL)
    good = DifferentialStyle(**CF_OK)
    cells = f"{address(first, 5)}:{address(last, 6)}"
    _add_rule(sheet, cells, f"E{first}>$G{first}", fail)
    _add_rule(sheet, cells, f"E{first}<=$G{first}", good)
    if points < 1:
        return
    every = "" if stride == 1 else f" (every {stride}th step)"
    loss = _chart(f"Loss per step{every}", "L")
    x = Reference(chart_sheet, min_col=1, min_row=2, max_row=points + 1)
    for col, title in ((2, "hand"), (3, "torch")):
        y = Reference(chart_sheet, min_col=col, min_row=2, max_row=points + 1)
        series = Series(y, x, title=title)
        _plain_line(series, dashed=col == 3)
        loss.series.append(series)
    sheet.add_chart(loss, f"{address(3, CHART_COLUMN)}")  # type: ignore[attr-defined]
    if layers:
        norms = _chart(f"Gradient norm per layer{every}", "‖∂L/∂θ‖")
        for offset, layer in enumerate(layers):
            y = Reference(chart_sheet, min_col=4 + offset, min_row=2, max_row=points + 1)
            series = Series(y, x, title=layer)
            _plain_line(series)
            norms.series.append(series)
        sheet.add_chart(norms, f"{address(24, CHART_COLUMN)}")  # type: ignore[attr-defined]
    step_size = _chart(f"Step size per step{every}", "step size (log scale)")
    step_size.y_axis.scaling.logBase = 10
    first = 4 + len(layers)
    for offset, (title, dashed) in enumerate((("η in force", True), ("‖θ′ − θ‖ / ‖∂L/∂θ‖", False))):
        y = Reference(chart_sheet, min_col=first + offset, min_row=2, max_row=points + 1)
        series = Series(y, x, title=title)
        _plain_line(series, dashed=dashed)
        step_size.series.append(series)
    sheet.add_chart(step_size, f"{address(45, CHART_COLUMN)}")  # type: ignore[attr-defined]


def _add_rule(sheet: object, cells: str, formula: str, style: DifferentialStyle) -> None:
    rule = Rule(type="expression", formula=[formula], dxf=style)
    sheet.conditional_formatting.add(cells, rule)  # type: ignore[attr-defined]


def _chart(title: str, y_title: str) -> ScatterChart:
    chart = ScatterChart()
    chart.title = title
    chart.style = 2
    chart.height = 10
    chart.width = 18
    chart.x_axis.title = "step"
    chart.y_axis.title = y_title
    chart.x_axis.delete = False  # openpyxl 3.1 hides axes unless told
    chart.y_axis.delete = False
    chart.legend.position = "b"
    chart.visible_cells_only = False  # the data sheet is hidden
    return chart


def _plain_line(series: Series, dashed: bool = False) -> None:
    series.marker.symbol = "none"
    series.smooth = False
    series.graphicalProperties.line.width = 15875  # 1.25 pt
    if dashed:
        series.graphicalProperties.line.dashStyle = "dash"
