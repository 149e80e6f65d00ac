"""The Diagnostics sheet and its charts: per-layer gradient norm, saturated/dead fraction and update
ratio over the steps of a run (the ``diagnostic`` terms of :mod:`handgrad.hand.diagnostics`).

* :class:`DiagnosticsHistory` is a harness observer (``harness.run(experiment, observers=[history])``)
  that keeps every diagnostic term's hand and torch value at every ``stride``-th step (at most
  ``max_points`` rows, so memory stays flat however long the run; the Trace sheet keeps every step).
* :func:`diagnostics_grid` lays out the sheet: one row per kept step; the hand values by kind
  (‖∂L/∂W‖, saturated or dead fraction, ‖ΔW‖/‖W‖) with one column per layer, torch's values in the
  same order beside them, and the row's largest |hand − torch|.
* :func:`diagnostic_charts` builds three native charts that read that sheet: gradient norm per layer
  (log scale), saturated / dead fraction per layer (0 to 1), update ratio per layer (log scale).
  The caller anchors them (``sheet.add_chart(chart, "M45")``); :func:`add_diagnostic_charts` stacks
  them down a column.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from openpyxl.chart import Reference, ScatterChart, Series

from handgrad.contract.names import SATURATION_RHO, SATURATION_THRESHOLD
from handgrad.contract.trace import StepTrace
from handgrad.harness import Experiment, Report, TermCheck
from handgrad.workbook.grid import Grid, address
from handgrad.workbook.styles import SCIENTIFIC

TITLE = "Diagnostics"
MAX_POINTS = 2000
KINDS = ("grad_norm", "units", "update_ratio")  # units: saturated (sigmoid, tanh) or dead (relu)
KIND_TITLES = {
    "grad_norm": "‖∂L/∂W‖ (Frobenius, before clipping)",
    "units": "saturated (σ, tanh) or dead (ReLU) fraction",
    "update_ratio": "‖W′ − W‖ / ‖W‖",
}
HEADER_ROW = 6  # the column headers; data from the row below
FIRST_COL = 2  # column A holds the step


def _kind(name: str) -> str:
    suffix = name.rsplit(".", 1)[1]
    return "units" if suffix in ("saturated", "dead") else suffix


class DiagnosticsHistory:
    """A harness observer keeping each ``diagnostic`` term (hand, torch) at every stride-th step
    and the last step."""

    def __init__(self, steps: int, max_points: int = MAX_POINTS) -> None:
        self.stride = max(1, math.ceil(steps / max_points))
        self.names: list[str] = []
        self.symbols: dict[str, str] = {}
        self.steps = array("l")
        self.hand: dict[str, array] = {}
        self.torch: dict[str, array] = {}
        self._pending: tuple[int, dict[str, float], dict[str, float]] | None = None

    def __call__(
        self, step: int, hand: StepTrace, torch: StepTrace, checks: Sequence[TermCheck] = ()
    ) -> None:
        if not self.names:
            self.names = [term.name for term in hand if term.phase == "diagnostic"]
            self.symbols = {name: hand[name].symbol for name in self.names}
            self.hand = {name: array("d") for name in self.names}
            self.torch = {name: array("d") for name in self.names}
        point = (step, _scalars(hand, self.names), _scalars(torch, self.names))
        if (step - 1) % self.stride == 0:
            self._keep(*point)
            self._pending = None
        else:  # held until the next kept step: the run's last step is kept whatever the stride
            self._pending = point

    observe = __call__

    def _keep(self, step: int, hand: dict[str, float], torch: dict[str, float]) -> None:
        self.steps.append(step)
        for name in self.names:
            self.hand[name].append(hand[name])
            self.torch[name].append(torch[name])

    def finish(self) -> None:
        """Keep the last step if the stride skipped it (idempotent; call after the run)."""
        if self._pending is not None:
            self._keep(*self._pending)
            self._pending = None

    def columns(self) -> dict[str, list[tuple[str, str]]]:
        """The sheet's hand columns by kind: kind -> [(term name, layer)] in layer order."""
        grouped: dict[str, list[tuple[str, str]]] = {kind: [] for kind in KINDS}
        for name in self.names:
            grouped[_kind(name)].append((name, name.split(".", 1)[0]))
        return grouped


def _scalars(trace: StepTrace, names: Sequence[str]) -> dict[str, float]:
    return {name: float(np.asarray(trace.value(name)).reshape(-1)[0]) for name in names}


@dataclass(frozen=True)
class DiagnosticsLayout:
    """Where the data landed: rows ``first_row..last_row``; ``hand[name]`` the column of a term."""

    first_row: int
    last_row: int
    hand: dict[str, int]
    torch: dict[str, int]


def layout(history: DiagnosticsHistory) -> DiagnosticsLayout:
    order = [name for kind in KINDS for name, _ in history.columns()[kind]]
    hand = {name: FIRST_COL + i for i, name in enumerate(order)}
    start = FIRST_COL + len(order) + 1  # one empty column between the blocks
    torch = {name: start + i for i, name in enumerate(order)}
    first = HEADER_ROW + 1
    return DiagnosticsLayout(first, first + len(history.steps) - 1, hand, torch)


def diagnostics_grid(experiment: Experiment, report: Report, history: DiagnosticsHistory) -> Grid:
    """The Diagnostics sheet of a run whose steps ``history`` observed."""
    history.finish()
    grid = Grid(TITLE, freeze=address(HEADER_ROW + 1, FIRST_COL))
    where = layout(history)
    grid.set(1, 1, "Diagnostics: why training stalls", "title")
    thresholds = ", ".join(
        f"{kind}′ < {value:g}" for kind, value in SATURATION_THRESHOLD.items()
    )  # sigmoid′ < 0.025, tanh′ < 0.1
    notes = [
        f"saturated: fraction of the batch's units with f′(z) < {SATURATION_RHO:g}·max f′ ({thresholds}); "
        "dead: fraction of ReLU units with relu′(z) = 0 (z ≤ 0) on every row of the batch.",
        "‖∂L/∂W‖: the weight gradient as backward produced it (before clipping); ‖ΔW‖/‖W‖: the "
        "optimizer step's size relative to the weights. W̃ = [W | b] where the bias is folded.",
        f"{experiment.scenario}: hand values (teal), torch's beside them (grey), the row's max |Δ|; "
        + ("every step." if history.stride == 1 else f"every {history.stride}th step and the last."),
    ]
    for row, note in enumerate(notes, start=2):
        grid.set(row, 1, note, "note")
    grid.set(HEADER_ROW, 1, "step", "header")
    grid.widths[1] = 8
    groups = history.columns()
    for block, columns, style in (("hand", where.hand, "diagnostic"), ("torch", where.torch, "torch")):
        for kind in KINDS:
            names = [name for name, _ in groups[kind]]
            if not names:
                continue
            first_col = columns[names[0]]
            grid.set(HEADER_ROW - 1, first_col, f"{KIND_TITLES[kind]} ({block})", "label")
            for name in names:
                col = columns[name]
                grid.text(HEADER_ROW, col, f"{name} {history.symbols[name]}", "header")
                grid.widths[col] = 14
                values = history.hand[name] if block == "hand" else history.torch[name]
                for i, value in enumerate(values):
                    grid.set(where.first_row + i, col, _finite(value), style, SCIENTIFIC)
    delta_col = max([*where.torch.values(), FIRST_COL]) + 2
    grid.set(HEADER_ROW, delta_col, "max |Δ|", "header")
    grid.widths[delta_col] = 11
    for i, step in enumerate(history.steps):
        row = where.first_row + i
        grid.set(row, 1, int(step))
        deltas = [abs(history.hand[n][i] - history.torch[n][i]) for n in history.names]
        grid.set(row, delta_col, _finite(max(deltas, default=0.0)), "delta")
    return grid


def _finite(value: float) -> float | str:
    """A number, or its text where it is not finite (a cell cannot hold NaN or inf)."""
    return value if math.isfinite(value) else str(value)


def diagnostic_charts(sheet: object, history: DiagnosticsHistory) -> list[ScatterChart]:
    """Three charts of the hand values on ``sheet`` (the written Diagnostics sheet), one series per
    layer: ‖∂L/∂W‖ (log y), saturated/dead fraction (0 to 1), ‖ΔW‖/‖W‖ (log y)."""
    where = layout(history)
    if where.last_row < where.first_row:
        return []
    x = Reference(sheet, min_col=1, min_row=where.first_row, max_row=where.last_row)
    charts = []
    every = "" if history.stride == 1 else f" (every {history.stride}th step)"
    for kind in KINDS:
        columns = history.columns()[kind]
        if not columns:
            continue
        log = kind != "units"
        title = {
            "grad_norm": "Gradient norm ‖∂L/∂W‖ per layer",
            "units": "Saturated / dead units per layer",
            "update_ratio": "Update ratio ‖ΔW‖/‖W‖ per layer",
        }[kind]
        chart = _chart(title + every, KIND_TITLES[kind].split(" (")[0], log=log)
        chart.x_axis.scaling.max = int(history.steps[-1])
        for name, layer in columns:
            col = where.hand[name]
            y = Reference(sheet, min_col=col, min_row=where.first_row, max_row=where.last_row)
            suffix = "" if kind != "units" else f" {name.rsplit('.', 1)[1]}"
            series = Series(y, x, title=layer + suffix)
            series.marker.symbol = "none"
            series.smooth = False
            series.graphicalProperties.line.width = 15875  # 1.25 pt
            chart.series.append(series)
        charts.append(chart)
    return charts


def _chart(title: str, y_title: str, *, log: bool) -> ScatterChart:
    chart = ScatterChart()
    chart.title = title
    chart.style = 2
    chart.height = 9
    chart.width = 16
    chart.x_axis.title = "step"
    chart.y_axis.title = y_title + (" (log scale)" if log else "")
    chart.x_axis.delete = False  # openpyxl 3.1 hides axes unless told
    chart.y_axis.delete = False
    chart.legend.position = "r"
    if log:
        chart.y_axis.scaling.logBase = 10
        chart.y_axis.number_format = "0.0E+00"
    else:
        chart.y_axis.scaling.min = 0
        chart.y_axis.scaling.max = 1
        chart.y_axis.number_format = "0%"
    chart.x_axis.scaling.min = 1
    return chart


def add_diagnostic_charts(
    sheet: object, charts: Sequence[ScatterChart], top: int, col: int, *, per_row: int = 1
) -> int:
    """Anchor ``charts`` from (top, col), ``per_row`` side by side (10 columns apart), rows of
    charts 19 rows apart; returns the first row below them."""
    for index, chart in enumerate(charts):
        row, across = divmod(index, per_row)
        sheet.add_chart(chart, address(top + 19 * row, col + 10 * across))  # type: ignore[attr-defined]
    return top + 19 * math.ceil(len(charts) / per_row)
