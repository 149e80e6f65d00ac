"""Write the workbook of a comparison run.

A :class:`WorkbookWriter` is created before the run and handed to :func:`handgrad.harness.run` as
an observer: each step's terms stream onto the Trace sheet as the step runs (memory stays flat),
and the steps the Walkthrough needs are kept. After the run, :meth:`WorkbookWriter.write` lays
out the other sheets and writes the file atomically: a temporary file beside the target, renamed
into place only when complete.

Sheet order: Summary, Walkthrough(s), Training, Trace (Trace 2, ...), Parameters, Read me, and
the hidden Chart data and Checks.

The Checks sheet tells ``scripts/recalc.py`` what each live formula cell computes. One row covers a
run of cells down one column: row ``first row + k`` (``k`` = 0 .. ``last row - first row``) of
``column`` on ``sheet`` computes element ``index + k·(index +)`` (flat, C order) of ``term`` at step
``step + k·(step +)``: the same element at successive steps (step + = 1, index + = 0) or a column of
a matrix at one step (step + = 0, index + = its row stride), so a Walkthrough of 100,000 live cells
needs a few thousand Checks rows. The hand side's numbers are on the Trace, (step, term) rows in C
order.
"""

from __future__ import annotations

import math
import re
import warnings
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
from openpyxl.utils import quote_sheetname
from openpyxl.workbook import Workbook
from openpyxl.workbook.defined_name import DefinedName

from handgrad import harness
from handgrad.atomic import atomic_path
from handgrad.contract.runs import RecurrentRun
from handgrad.contract.trace import StepTrace
from handgrad.harness import Experiment, Report, TermCheck
from handgrad.tracebudget import TraceBudget, TraceSteps
from handgrad.workbook import live_sheets, parameters, readme, summary
from handgrad.workbook.cached import fill_cached
from handgrad.workbook.diagnostics_sheet import (
    DiagnosticsHistory,
    add_diagnostic_charts,
    diagnostic_charts,
    diagnostics_grid,
)
from handgrad.workbook.grid import Grid, collection_paused
from handgrad.workbook.package import save
from handgrad.workbook.styles import StyleBook
from handgrad.workbook.tracesheet import TraceSheets
from handgrad.workbook.training import training_grid
from handgrad.workbook.xlsx import (
    EXCEL_MAX_COLS,
    EXCEL_MAX_ROWS,
    ExcelLimitError,
    SharedStrings,
    SheetData,
    check_title,
    column_letter,
)

CHART_POINTS = 2000  # the charts draw at most this many steps (every k-th step beyond)
CHECKS_TITLE = "Checks"
CHECK_COLUMNS = ("sheet", "column", "first row", "last row", "step", "term", "index", "step +", "index +")
HAND_VALUES_KEPT = 2_000_000  # hand numbers kept for the Training sheet's cached values (16 MB)
AUTO_CANDIDATES = 8  # without --walkthrough, the Walkthrough shows the first of these steps that teaches
_ADDRESS_LIKE = re.compile(r"^([A-Za-z]{1,3}\d+|[RrCc]|[Rr]\d*[Cc]\d*)$")


class Book:
    """An openpyxl write-only workbook whose sheets' rows are streamed by :class:`SheetData`."""

    def __init__(self, first_title: str) -> None:
        self.workbook = Workbook(write_only=True)
        self.sheet_data: dict[Any, SheetData] = {}
        self.strings = SharedStrings()
        self.first = self.create_sheet(first_title)
        self.styles = StyleBook(self.workbook)

    def create_sheet(self, title: str) -> Any:
        check_title(title)
        if title in self.workbook.sheetnames:
            raise ExcelLimitError(f"two sheets would be named {title!r}")
        return self.workbook.create_sheet(title)

    def save(self, path: str | Path) -> None:
        """Write the workbook to ``path`` (a temporary file: see :func:`handgrad.atomic.atomic_path`)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # openpyxl: "write-only mode: add table columns"
            save(self.workbook, path, self.sheet_data, self.strings)

    def close(self) -> None:
        for data in self.sheet_data.values():
            data.close()


def write_grid(book: Book, grid: Grid, sheet: Any = None) -> Any:
    """Write a :class:`Grid` into a (new) write-only sheet: cells with styles, formulas and array
    formulas, defined names (scoped to the sheet), column widths, frozen panes, hidden state."""
    if sheet is None:
        sheet = book.create_sheet(grid.title)
    if grid.max_row > EXCEL_MAX_ROWS or grid.max_col > EXCEL_MAX_COLS:
        raise ExcelLimitError(
            f"sheet {grid.title!r} would need {grid.max_row:,} rows × {grid.max_col:,} columns; "
            f"Excel holds {EXCEL_MAX_ROWS:,} × {EXCEL_MAX_COLS:,}"
        )
    for col, width in sorted(grid.widths.items()):
        sheet.column_dimensions[column_letter(col)].width = width
    if grid.freeze:
        sheet.freeze_panes = grid.freeze
    if grid.hidden:
        sheet.sheet_state = "hidden"
    for name, ref in grid.defined_names.items():
        if _ADDRESS_LIKE.match(name):
            raise ExcelLimitError(f"defined name {name!r} reads as a cell address; write it like W_1")
        sheet.defined_names[name] = DefinedName(name, attr_text=f"{quote_sheetname(grid.title)}!{ref}")
    data = SheetData(sheet)
    data.add_grid(grid.cells, book.styles.id, book.strings)
    book.sheet_data[sheet] = data
    return sheet


def parse_walkthrough(text: str) -> list[int]:
    """``'1,50,1000' -> [1, 50, 1000]`` (sorted, unique, each ≥ 1)."""
    from handgrad.contract.spec import SpecError

    steps = []
    for part in str(text).split(","):
        try:
            step = int(part)
        except ValueError:
            raise SpecError("walkthrough", f"expected comma-separated step numbers, got {text!r}") from None
        if step < 1:
            raise SpecError("walkthrough", f"steps count from 1, got {step}")
        steps.append(step)
    return sorted(set(steps))


def check_runs(
    checks: Mapping[tuple[int, int], tuple[int, str, int]],
) -> list[tuple[int, int, int, int, str, int, int, int]]:
    """Fold ``grid.checks`` into runs down a column: (col, first row, last row, first step, term,
    first index, step +, index +), where each next row computes the element ``index +`` further on
    at the step ``step +`` later (a run's second row fixes both strides).

    Greedy, cell by cell down each column: a cell joins the run above it when it is the next row
    of the same column and term and (after the run's second row) keeps both strides; else it
    starts a run. In arrays: pair k is cell k and the next (column-major); a run that starts at a
    cell whose pair joins ends at the first later pair that does not join or whose strides differ
    from the pair before it, so only the runs themselves are walked in Python (a deep Walkthrough:
    125,000 checks, a few thousand runs)."""
    n = len(checks)
    if n == 0:
        return []
    values = list(checks.values())
    terms: dict[str, int] = {}
    code = terms.setdefault
    rows = np.fromiter(map(itemgetter(0), checks), np.int64, n)
    cols = np.fromiter(map(itemgetter(1), checks), np.int64, n)
    steps = np.fromiter(map(itemgetter(0), values), np.int64, n)
    indices = np.fromiter(map(itemgetter(2), values), np.int64, n)
    codes = np.fromiter((code(term, len(terms)) for _, term, _ in values), np.int64, n)
    order = np.lexsort((rows, cols))  # column-major: (col, row) are distinct
    rows, cols, steps, indices, codes = rows[order], cols[order], steps[order], indices[order], codes[order]
    step_plus, index_plus = np.diff(steps), np.diff(indices)
    joins = (np.diff(cols) == 0) & (np.diff(rows) == 1) & (np.diff(codes) == 0)
    stops = ~joins
    stops[1:] |= (step_plus[1:] != step_plus[:-1]) | (index_plus[1:] != index_plus[:-1])
    stop_at = np.flatnonzero(stops).tolist()
    joined = joins.tolist()
    names = list(terms)
    c, r, st, t, x = (a.tolist() for a in (cols, rows, steps, codes, indices))
    sp, xp = step_plus.tolist(), index_plus.tolist()
    runs: list[tuple[int, int, int, int, str, int, int, int]] = []
    i = 0
    while i < n:
        if i == n - 1 or not joined[i]:
            runs.append((c[i], r[i], r[i], st[i], names[t[i]], x[i], 0, 0))
            i += 1
            continue
        k = bisect_right(stop_at, i)
        end = stop_at[k] if k < len(stop_at) else n - 1  # the run's last cell
        runs.append((c[i], r[i], r[end], st[i], names[t[i]], x[i], sp[i], xp[i]))
        i = end + 1
    return runs


class WorkbookWriter:
    """Collects a run step by step (pass :meth:`observe` to ``harness.run``), then writes it."""

    def __init__(
        self,
        experiment: Experiment,
        *,
        walkthrough_steps: Iterable[int] | None = None,
        live_steps: int = 1000,
        rows_per_sheet: int = EXCEL_MAX_ROWS,
        trace_steps: TraceSteps | None = None,
        command: str | None = None,
    ) -> None:
        self.experiment = experiment
        self.command = command or f"handgrad compare {experiment.scenario} --xlsx FILE"
        self.facts: readme.WorkbookFacts | None = None
        # None: the step is chosen after the run among the first AUTO_CANDIDATES (choose_walkthrough)
        self.auto_walkthrough = walkthrough_steps is None
        candidates = range(1, AUTO_CANDIDATES + 1) if walkthrough_steps is None else walkthrough_steps
        steps = {int(k) for k in candidates}
        self.walkthrough_steps = sorted(k for k in steps if 1 <= k <= experiment.steps)
        self.live_steps = int(live_steps)
        self.rows_per_sheet = rows_per_sheet
        self.book = Book(summary.TITLE)
        self.tolerance = experiment.tolerance
        self.trace = TraceSheets(
            self.book.workbook,
            self.tolerance,
            strings=self.book.strings,
            rows_per_sheet=rows_per_sheet,
            new_sheet=self.book.create_sheet,
        )
        self.captured: dict[int, tuple[StepTrace, StepTrace]] = {}
        self._capture = {s for k in self.walkthrough_steps for s in (k - 1, k) if s >= 1}
        self._auto_chosen: int | None = None
        self._hand_values: dict[int, dict[str, np.ndarray]] = {}  # the Training rows' cached values
        self._keep_values = 0  # steps 1.._keep_values keep their hand numbers (set at step 1)
        self.uncached = 0  # formula cells written without a cached value
        self.budget = TraceBudget(trace_steps or TraceSteps("auto"), experiment.steps)
        if not self.auto_walkthrough:
            self.budget.require(self.walkthrough_steps)
        # chart series (step, L hand, L torch, gradient norm per layer, η in force, ‖Δθ‖/‖∂L/∂θ‖):
        # every stride-th step
        self.stride = max(1, math.ceil(experiment.steps / CHART_POINTS))
        self._layers = _layer_gradients(experiment)
        self._chart: list[array] = [array("d") for _ in range(5 + len(self._layers))]
        self._params_before: Mapping[str, np.ndarray] = experiment.initial_params
        self._last_point: list[float] | None = None
        self.steps_seen = 0
        self.diagnostics = DiagnosticsHistory(experiment.steps, CHART_POINTS)

    # -- during the run ---------------------------------------------------------------------

    def observe(self, step: int, hand: StepTrace, torch: StepTrace, checks: Sequence[TermCheck] = ()) -> None:
        """The harness observer: stream the step's terms and keep what the live sheets need."""
        rows = sum(term.value.size for term in hand)
        if step == 1:
            self._require_training_rows(rows)
            if rows * min(self.live_steps, self.experiment.steps) <= HAND_VALUES_KEPT:
                self._keep_values = self.live_steps
        if step <= self._keep_values:
            self._hand_values[step] = {term.name: np.ravel(term.value) for term in hand}
        if step in self._capture:
            self.captured[step] = (hand, torch)
            self._choose_online(step, hand)
        failing = any(not check.ok for check in checks)
        scales = [check.scale for check in checks] if checks else None
        for kept, (h, t, sc) in self.budget.admit(step, rows, failing, (hand, torch, scales)):
            self.trace.add_step(kept, h, t, sc)
        point = [float(step), _scalar(hand, "loss.L"), _scalar(torch, "loss.L")]
        gradient_squares = 0.0
        for grads in self._layers.values():
            with np.errstate(over="ignore", invalid="ignore"):  # a diverging run: inf is the point
                squares = [np.sum(np.square(hand.value(g), dtype=np.float64)) for g in grads if g in hand]
            layer_squares = sum(float(square) for square in squares)
            gradient_squares += layer_squares
            point.append(math.sqrt(layer_squares))
        point += self._step_size(step, hand, gradient_squares)
        if (step - 1) % self.stride == 0:
            for series, value in zip(self._chart, point, strict=True):
                series.append(value)
            self._last_point = None
        else:
            self._last_point = point
        self.steps_seen = step
        self.diagnostics(step, hand, torch, checks)

    def _step_size(self, step: int, hand: StepTrace, gradient_squares: float) -> list[float]:
        """[η in force, effective step size ‖θ′ − θ‖/‖∂L/∂θ‖ over every parameter] of the step
        (the hand side's numbers, as the other charts; NaN where the weights before the step are
        not known, a step skipped). For plain SGD the second is η; momentum, Adam's and RMSprop's
        scaling, weight decay and clipping show as its distance from η."""
        lr = next((term for term in hand if term.phase == "state" and term.name.endswith(".lr")), None)
        known = step == 1 or step == self.steps_seen + 1
        moved = 0.0
        after: dict[str, np.ndarray] = {}
        for name, before in self._params_before.items():
            if f"{name}_next" not in hand:
                known = False
                break
            after[name] = np.asarray(hand.value(f"{name}_next"))
            with np.errstate(over="ignore", invalid="ignore"):
                difference = after[name].astype(np.float64) - np.asarray(before, dtype=np.float64)
                moved += float(np.sum(np.square(difference)))
        if after and len(after) == len(self._params_before):
            self._params_before = after
        effective = math.nan
        if known and gradient_squares > 0:
            effective = math.sqrt(moved) / math.sqrt(gradient_squares)
        return [float(np.asarray(lr.value).reshape(-1)[0]) if lr is not None else math.nan, effective]

    # -- after the run ----------------------------------------------------------------------

    def _require_training_rows(self, rows: int) -> None:
        """The Trace keeps the Training sheet's live rows (recalc.py checks them against it) when
        they fit the budget; else the Training sheet is cut to the steps the Trace keeps."""
        prefix = min(self.live_steps, self.experiment.steps)
        if live_sheets.DENSE.reason(self.experiment) is None and rows * prefix <= self.budget.budget_rows:
            self.budget.require(range(1, prefix + 1))

    def _choose_online(self, step: int, hand: StepTrace) -> None:
        """Without named steps the Walkthrough shows the first of steps 1..AUTO_CANDIDATES where no
        gradient term is zero everywhere (xor's step 1 feeds x = (0, 0), where ∂L/∂W⁽¹⁾ = 0:
        nothing to see), else step 1; chosen as the steps run, so the Trace keeps it."""
        if not self.auto_walkthrough or self._auto_chosen:
            return
        teaches = not any(term.phase == "backward" and not np.any(term.value) for term in hand)
        last = step == min(AUTO_CANDIDATES, self.experiment.steps)
        if teaches or last:
            chosen = step if teaches else (1 if 1 in self.budget.kept else step)
            self._auto_chosen = chosen
            self.budget.require([chosen])

    def choose_walkthrough(self) -> None:
        """After the run: keep only the chosen walkthrough step (and the one before it)."""
        if not self.auto_walkthrough:
            return
        self.auto_walkthrough = False
        chosen = self._auto_chosen or min(self.captured, default=1)  # None: stopped before choosing
        self.walkthrough_steps = [chosen]
        self.captured = {k: v for k, v in self.captured.items() if k in (chosen - 1, chosen)}

    def write(self, path: str | Path, report: Report) -> None:
        """Lay out every sheet and write the workbook to ``path`` atomically."""
        with collection_paused():
            self._write(path, report)

    def _write(self, path: str | Path, report: Report) -> None:
        self.choose_walkthrough()
        for kept, (h, t, sc) in self.budget.finish():
            self.trace.add_step(kept, h, t, sc)
        book = self.book
        grids, training_title, live_note = self._live_grids(report)
        self.uncached = sum(fill_cached(grid, self._hand_value) for grid in grids)
        live_sheets = [write_grid(book, grid) for grid in grids]
        trace_sheets = self.trace.finish()
        for sheet, data in trace_sheets:
            book.sheet_data[sheet] = data
        extra_grids: list[tuple[Grid, Callable[[Any, Grid], None]]] = []
        if self.diagnostics.names:  # per-layer diagnostics (deep): a sheet and charts on the Summary
            grid = diagnostics_grid(self.experiment, report, self.diagnostics)

            def diagnostics_charts(sheet: Any, _: Grid) -> None:
                charts = diagnostic_charts(sheet, self.diagnostics)
                add_diagnostic_charts(
                    book.first, charts, top=summary.DIAGNOSTICS_TOP, col=summary.CHART_COLUMN, per_row=2
                )

            extra_grids.append((grid, diagnostics_charts))
        if isinstance(self.experiment.spec, RecurrentRun) and self.captured:  # ‖∂L/∂h_t‖ through time
            from handgrad.workbook.recurrent_walkthrough import (
                gradient_through_time_chart,
                gradient_through_time_grid,
            )

            def through_time_chart(sheet: Any, grid: Grid) -> None:
                sheet.add_chart(gradient_through_time_chart(grid), f"B{grid.max_row + 3}")

            extra_grids.append(
                (gradient_through_time_grid(self.experiment, self.captured), through_time_chart)
            )

        training_grid = next((g for g in grids if g.title == training_title), None)
        facts = readme.WorkbookFacts(
            walkthrough_sheets=[g.title for g in grids if g.title != training_title],
            walkthrough_steps=list(self.walkthrough_steps) if grids else [],
            training_sheet=training_title,
            training_not_live=training_grid.not_live if training_grid is not None else None,
            training_rows=len({r for r, _ in training_grid.checks}) if training_grid is not None else 0,
            live_note=live_note,
            live_steps=self.live_steps,
            trace_sheets=[sheet.title for sheet, _ in trace_sheets],
            trace_rows=self.trace.rows,
            trace_note=self.budget.describe(report.steps_run),
            rows_per_sheet=self.rows_per_sheet,
            chart_stride=self.stride,
            checks=sum(len(getattr(g, "checks", {})) for g in grids),
            other_sheets=[grid.title for grid, _ in extra_grids],
            command=self.command,
        )
        self.facts = facts
        summary_grid, layout = summary.summary_grid(self.experiment, report, facts)
        write_grid(book, summary_grid, book.first)
        extra_sheets = []
        for grid, decorate in extra_grids:
            sheet = write_grid(book, grid)
            decorate(sheet, grid)
            extra_sheets.append(sheet)
        parameters_sheet = write_grid(book, parameters.parameters_grid(self.experiment, report))
        checks_grid = self._checks_grid(grids)
        readme_sheet = write_grid(book, readme.readme_grid(self.experiment, report, facts))
        chart_grid, points = self._chart_grid()
        chart_sheet = write_grid(book, chart_grid)
        checks_sheet = write_grid(book, checks_grid)
        summary.decorate(book.first, chart_sheet, layout, points, list(self._layers), self.stride)

        order = [book.first, *live_sheets, *(s for s, _ in trace_sheets), *extra_sheets]
        order += [parameters_sheet, readme_sheet, chart_sheet, checks_sheet]
        assert len(order) == len(book.workbook._sheets)
        book.workbook._sheets[:] = order
        book.workbook.active = 0
        with atomic_path(path, "xlsx") as temporary:
            book.save(temporary)

    def _hand_value(self, step: int, term: str) -> np.ndarray | None:
        """The hand side's numbers of ``term`` at ``step`` (flat), where the writer kept them."""
        kept = self._hand_values.get(step)
        if kept is not None:
            return kept.get(term)
        if step in self.captured and term in self.captured[step][0]:
            return np.ravel(self.captured[step][0].value(term))
        return None

    def notices(self) -> list[str]:
        """What the console says about the written workbook: the Trace's steps, live sheets missing."""
        if self.facts is None:
            return []
        return [self.facts.trace_note, *self.facts.not_live()]

    def _live_grids(self, report: Report) -> tuple[list[Grid], str | None, str | None]:
        """The sheets of live formulas: the provider of the run's family (workbook/live_sheets.py)
        writes its walkthrough(s) (and, for a dense network, the Training sheet); else none, and
        why, in the words of the family's provider."""
        family = live_sheets.provider(self.experiment.spec)
        if family is None:
            return [], None, live_sheets.no_provider_reason(self.experiment)
        reason = family.reason(self.experiment)
        if reason is not None:
            return [], None, reason
        steps = [k for k in self.walkthrough_steps if k in self.captured]
        grids = list(family.grids(self.experiment, self.captured, steps))
        if not family.training:
            return grids, None, None
        live = min(self.live_steps, self.budget.prefix())  # recalc.py checks them on the Trace
        grid = training_grid(self.experiment, report, live)
        grids.append(grid)
        return grids, grid.title, None

    def _checks_grid(self, grids: list[Grid]) -> Grid:
        grid = Grid(CHECKS_TITLE, hidden=True, freeze="A2")
        grid.widths.update({1: 16, 2: 8, 3: 9, 4: 9, 5: 7, 6: 20, 7: 7, 8: 7, 9: 7})
        for col, name in enumerate(CHECK_COLUMNS, start=1):
            grid.set(1, col, name, "header")
        row = 1
        for source in grids:
            for col, first, last, step, term, index, step_plus, index_plus in check_runs(
                getattr(source, "checks", {})
            ):
                row += 1
                grid.text(row, 1, source.title)
                grid.text(row, 2, column_letter(col))
                grid.set(row, 3, first)
                grid.set(row, 4, last)
                grid.set(row, 5, step)
                grid.text(row, 6, term)
                grid.set(row, 7, index)
                grid.set(row, 8, step_plus)
                grid.set(row, 9, index_plus)
        return grid

    def _chart_grid(self) -> tuple[Grid, int]:
        grid = Grid(summary.CHART_DATA_TITLE, hidden=True)
        headers = [
            "step",
            "L (hand)",
            "L (torch)",
            *(f"‖∂L/∂θ‖ {layer}" for layer in self._layers),
            "η in force",
            "‖θ′ − θ‖ / ‖∂L/∂θ‖",
        ]
        for col, name in enumerate(headers, start=1):
            grid.set(1, col, name, "header")
        columns = [list(series) for series in self._chart]
        if self._last_point is not None:
            for series, value in zip(columns, self._last_point, strict=True):
                series.append(value)
        points = len(columns[0])
        for i in range(points):
            for col, series in enumerate(columns, start=1):
                value = series[i]
                if col > len(headers) - 2 and not value > 0:  # a log-scale series: no 0, no NaN
                    continue
                grid.set(i + 2, col, int(value) if col == 1 else value)
        return grid, points

    def close(self) -> None:
        """Drop the temporary row files (safe to call twice)."""
        self.trace.close()
        self.book.close()


def _scalar(trace: StepTrace, name: str) -> float:
    return float(np.asarray(trace.value(name)).reshape(-1)[0]) if name in trace else math.nan


def _layer_gradients(experiment: Experiment) -> dict[str, list[str]]:
    """Each layer's parameter-gradient term names: ``dense1 -> [dense1.dL_dW, dense1.dL_db]``."""
    layers: dict[str, list[str]] = {}
    for name in experiment.initial_params:
        layer, _, short = name.rpartition(".")
        if layer:
            layers.setdefault(layer, []).append(f"{layer}.dL_d{short}")
    return layers


def run_with_workbook(
    experiment: Experiment,
    path: str | Path,
    *,
    walkthrough_steps: Iterable[int] | None = None,
    live_steps: int = 1000,
    resync: bool = False,
    progress: Callable[[int, int], None] | None = None,
    rows_per_sheet: int = EXCEL_MAX_ROWS,
    trace_steps: TraceSteps | None = None,
    notices: list[str] | None = None,
) -> Report:
    """Run the comparison with the workbook streaming from it, then write the workbook;
    ``notices`` receives its console lines (what the Trace keeps, a live sheet left out and why)."""
    writer = WorkbookWriter(
        experiment,
        walkthrough_steps=walkthrough_steps,
        live_steps=live_steps,
        rows_per_sheet=rows_per_sheet,
        trace_steps=trace_steps,
    )
    try:
        report = harness.run(experiment, resync=resync, observers=[writer.observe], progress=progress)
        writer.write(path, report)
        if notices is not None:
            notices.extend(writer.notices())
    finally:
        writer.close()
    return report


def write_workbook(
    path: str | Path,
    experiment: Experiment,
    report: Report,
    captured: dict[int, tuple[StepTrace, StepTrace]],
    *,
    walkthrough_steps: Iterable[int] = (1,),
    live_steps: int = 1000,
) -> None:
    """Write a workbook from a finished run and the steps captured of it. The Trace (and so what
    recalc.py can check) holds those steps only: to trace every step, stream with
    :class:`WorkbookWriter` or :func:`run_with_workbook`."""
    writer = WorkbookWriter(
        experiment, walkthrough_steps=walkthrough_steps, live_steps=live_steps, trace_steps=TraceSteps("all")
    )
    try:
        for step in sorted(captured):
            hand, torch = captured[step]
            writer.observe(step, hand, torch, [])
        writer.write(path, report)
    finally:
        writer.close()
