"""The Training sheet: the whole run of a dense network as live formulas, one row per step.

Layout, top to bottom:

- a title and a note (with the cap on live rows when the run is longer than ``live_steps``);
- the inputs: η (defined name ``eta``) and the initial weights (``W_1`` with ``b_1`` beside it,
  or the folded ``Wt_1``), plain cells a reader may edit;
- two header rows (the term's symbol over its columns, coloured by phase; then each column's
  element), then one row per step.

The columns of a step row, left to right (a term's elements in torch's flat order, so a batch term
(N, units) holds sample 1's units, then sample 2's, ...; a minibatch's short last slice leaves
its missing samples blank):

``step`` · the data rows the step uses · the weights before the step (row 1: the initial input
cells; row t: row t − 1's updated weights, with a fixed row such as ``DS$12``: see the NOTE in
:meth:`_Row.weights_before`) · x and y (``INDEX`` into the data block by the row
numbers) · every forward term (z⁽ˡ⁾ = Σᵢ xᵢ·Wⱼᵢ + bⱼ written out, a⁽ˡ⁾) · ℓ (bce only) · L ·
every backward term (∂L/∂ŷ, ∂L/∂z⁽ˡ⁾, ∂L/∂W⁽ˡ⁾ = Σ over samples, ∂L/∂b⁽ˡ⁾, ∂L/∂a⁽ˡ⁻¹⁾, ∂L/∂x) ·
with clipping: ‖g‖ and the coefficient (by norm) and the clipped gradients ĝ · the optimizer's
state (reading the row above) and the updated weights · its scalars (t; the lr in force, which
under a schedule reads the row above's η and the update reads) · torch's L (a plain number) and
|Δ| of L by formula.

To the right of the steps sits the data block (``x_data``, ``y_data``; inputs too). Editing η,
an initial weight or a data value recomputes every row. ``grid.checks`` maps each term cell to its
(step, term, flat index). A run whose step row would not fit Excel (16,384 columns, 8,192-character
formulas) gets a Training sheet that says so, and the Trace sheet only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from openpyxl.utils import get_column_letter

from handgrad.contract.spec import Activation, Dense, SpecError, Stage
from handgrad.contract.stack import param_table, shape_of, sup
from handgrad.harness import Experiment, Report
from handgrad.workbook import formulas as fx
from handgrad.workbook.grid import Grid, address, area
from handgrad.workbook.walkthrough import live_stages, output_suffix

DEFAULT_LIVE_STEPS = 1000
SHEET_NAME = "Training"
EXCEL_MAX_ROWS = 1_048_576
EXCEL_MAX_COLS = 16_384


@dataclass(frozen=True)
class Group:
    """A run of columns holding one term's elements per row, in torch's flat order."""

    term: str  # the trace term's name, or a label for helper columns ("x", "y", "rows", ...)
    left: int
    shape: tuple[int, ...]  # (Bmax, units) for sample terms, the value's shape for parameters

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def col(self, flat: int) -> int:
        return self.left + flat

    def sample_col(self, s: int, j: int) -> int:
        """Column of element (s, j) of a (samples, units) term."""
        return self.left + s * self.shape[1] + j


class _Columns:
    """Hands out column groups left to right and writes their two header rows."""

    def __init__(self, grid: Grid, header: int, first: int) -> None:
        self.grid = grid
        self.header = header
        self.next = first
        self.groups: dict[str, Group] = {}

    def add(self, key: str, shape: tuple[int, ...], title: str, style: str, labels: list[str]) -> Group:
        group = Group(key, self.next, shape)
        if group.left + group.size - 1 > EXCEL_MAX_COLS:
            raise fx.TooLarge(
                f"a step's terms need more than Excel's {EXCEL_MAX_COLS:,} columns (reached at {title})"
            )
        self.groups[key] = group
        for offset in range(group.size):
            self.grid.text(self.header, group.left + offset, title if offset == 0 else "", style)
            self.grid.text(self.header + 1, group.left + offset, labels[offset], "header")
            self.grid.widths[group.left + offset] = 12
        self.next += group.size
        return group


def _sample_labels(samples: int, units: int) -> list[str]:
    return [f"s{s + 1}·{j + 1}" for s in range(samples) for j in range(units)]


def _param_labels(shape: tuple[int, ...]) -> list[str]:
    if len(shape) == 1:
        return [f"[{j + 1}]" for j in range(shape[0])]
    return [f"[{i + 1},{j + 1}]" for i in range(shape[0]) for j in range(shape[1])]


@dataclass
class _Layout:
    """Where everything of the Training sheet sits: the column groups and the input cells."""

    stages: list[Stage]
    table: list[tuple[str, tuple[int, ...], str]]
    rule: fx.UpdateRule
    hyper_names: dict[str, str]
    first: int  # the row of step 1
    initial: dict[str, tuple[int, int]] = field(default_factory=dict)  # parameter -> its input block
    rows: Group | None = None
    before: dict[str, Group] = field(default_factory=dict)
    x: Group | None = None
    y: Group | None = None
    outputs: list[Group] = field(default_factory=list)
    ell: Group | None = None
    loss: Group | None = None
    out_grads: dict[int, Group] = field(default_factory=dict)
    param_grads: dict[str, Group] = field(default_factory=dict)
    dx: Group | None = None
    clip_norm: Group | None = None
    clip_coefficient: Group | None = None
    clipped: dict[str, Group] = field(default_factory=dict)
    state: dict[tuple[str, str], Group] = field(default_factory=dict)
    next: dict[str, Group] = field(default_factory=dict)
    scalars: dict[str, Group] = field(default_factory=dict)
    torch: Group | None = None
    delta: Group | None = None


def training_grid(experiment: Experiment, report: Report, live_steps: int = DEFAULT_LIVE_STEPS) -> Grid:
    """The Training sheet: the first ``live_steps`` steps of the run as live formulas (see the
    module docstring); ``report.loss_history`` gives torch's loss per step. A run too large for a
    sheet (a step's terms wider than Excel's columns, a formula longer than 8,192 characters) gets a
    Training sheet that says so instead."""
    stages = live_stages(experiment)
    if isinstance(live_steps, bool) or not isinstance(live_steps, (int, np.integer)) or live_steps < 0:
        raise SpecError("live_steps", f"expected an integer >= 0, got {live_steps!r}")
    batches = experiment.spec["batches"]
    steps_run = min(report.steps_run, len(report.loss_history), len(batches))
    rows = min(int(live_steps), steps_run)
    try:
        return _live_training(experiment, report, stages, int(live_steps), rows, steps_run)
    except fx.TooLarge as error:
        grid = Grid(SHEET_NAME, not_live=error.message)
        grid.widths[1] = 12
        grid.text(1, 1, "Training: not live for this run", "title")
        grid.text(
            2,
            1,
            f"No live Training sheet: {error.message}. Every step's terms are on the Trace sheet.",
            "note",
        )
        return grid


def _live_training(
    experiment: Experiment, report: Report, stages: list[Stage], live_steps: int, rows: int, steps_run: int
) -> Grid:
    spec = experiment.spec
    optimizer, data, batches = spec["optimizer"], spec["data"], spec["batches"]
    rule = fx.update_rule(optimizer)
    grid = Grid(SHEET_NAME)
    grid.widths[1] = 12
    grid.text(1, 1, "Training: every step of the run as live formulas, one row per step", "title")
    if steps_run > rows:
        cap = (
            f"Live rows: steps 1 to {rows} of {steps_run} (the cap: live_steps = {live_steps}); "
            "every step of the run is on the Trace sheet."
        )
    else:
        cap = f"All {steps_run} steps of the run are live."
    grid.text(
        2,
        1,
        f"{cap} Yellow cells are inputs: edit η, an initial weight or a data value and every row "
        "recomputes. Each row reads the row above's updated weights; torch's loss and |Δ| are at the right.",
        "note",
    )
    layout = _inputs(grid, experiment, stages, rule, top=3)
    bmax = max((len(batches[t]) for t in range(rows)), default=1)
    _columns(grid, layout, experiment, bmax)
    if layout.first + rows - 1 > EXCEL_MAX_ROWS:
        raise fx.TooLarge(
            f"{rows:,} live rows do not fit Excel's {EXCEL_MAX_ROWS:,} rows (lower --live-steps)"
        )
    assert layout.torch is not None and layout.delta is not None and layout.x is not None
    _data_block(grid, layout, data, layout.delta.left + 2)
    # freeze the step and its data rows only: the weights' columns scroll, so a laptop screen
    # shows the terms (freezing through x held 15-18 columns, about 1,500 px)
    grid.freeze = address(layout.first, layout.rows.left + layout.rows.size)
    for t in range(1, rows + 1):
        _Row(grid, layout, experiment, t).write(float(report.loss_history[t - 1][1]))
    return grid


def _inputs(
    grid: Grid, experiment: Experiment, stages: list[Stage], rule: fx.UpdateRule, top: int
) -> _Layout:
    """η (and any other hyper-parameter) and the initial weights as input cells, from row ``top``."""
    optimizer = experiment.spec["optimizer"]
    hyper_names: dict[str, str] = {}
    for hyper in rule.hyper(optimizer):
        grid.text(top, 1, f"{hyper.symbol} ({hyper.name})", "header")
        grid.set(top, 2, hyper.value, "input")
        grid.name(hyper.name, top, 2)
        hyper_names[hyper.key] = hyper.name
        top += 1
    top += 1
    table = param_table(experiment.spec["network"])
    k_of = {stage.name: stage.k for stage in stages if isinstance(stage.layer, Dense)}
    initial: dict[str, tuple[int, int]] = {}
    left, height = 2, 0
    grid.text(top, 1, "initial", "header")
    for name, _, symbol in table:
        stage_name, short = name.split(".", 1)
        value = np.asarray(experiment.initial_params[name], dtype=float)
        matrix = value.reshape(-1, 1) if value.ndim == 1 else value
        if left + matrix.shape[1] - 1 > EXCEL_MAX_COLS:
            raise fx.TooLarge(f"the initial weights need more than Excel's {EXCEL_MAX_COLS:,} columns")
        grid.text(top, left, symbol, "header")
        grid.block(top + 1, left, matrix, "input")
        grid.name(f"{short}_{k_of[stage_name]}", top + 1, left, *matrix.shape)  # W_1, b_1, Wt_1
        initial[name] = (top + 1, left)
        height = max(height, matrix.shape[0] + 1)
        left += matrix.shape[1] + 1
    header = top + height + 1
    return _Layout(stages, table, rule, hyper_names, first=header + 2, initial=initial)


def _columns(grid: Grid, layout: _Layout, experiment: Experiment, bmax: int) -> None:
    """Every column group of a step row, with its two header rows."""
    spec = experiment.spec
    loss, optimizer, data = spec["loss"], spec["optimizer"], spec["data"]
    stages, table, rule = layout.stages, layout.table, layout.rule
    n_in, n_out = data.x.shape[1], data.y.shape[1]
    cols = _Columns(grid, layout.first - 2, 1)
    cols.add("step", (1,), "step", "header", ["t"])
    layout.rows = cols.add("rows", (bmax,), "data rows", "header", [f"s{s + 1}" for s in range(bmax)])
    for name, shape, symbol in table:
        layout.before[name] = cols.add(
            f"{name}:before", shape, f"{symbol} before the step", "update", _param_labels(shape)
        )
    layout.x = cols.add("x", (bmax, n_in), "x", "forward", _sample_labels(bmax, n_in))
    layout.y = cols.add("y", (bmax, n_out), "y", "forward", _sample_labels(bmax, n_out))

    symbols: dict[int, str] = {}
    for index, stage in enumerate(stages):
        layer, k = stage.layer, stage.k
        if isinstance(layer, Dense):
            units = layer.out_features
            source = "x" if index == 0 else symbols[index - 1]
            if layer.fold_bias:
                title = f"z{sup(k)} = W̃{sup(k)}·[{source}; 1]"
            else:
                title = f"z{sup(k)} = W{sup(k)}·{source}" + (f" + b{sup(k)}" if layer.bias else "")
        else:
            units = layout.outputs[-1].shape[1]
            title = f"a{sup(k)} = {layer.kind}(z{sup(k)})"
        symbols[index] = title.split(" = ")[0]
        term = f"{stage.name}.{output_suffix(stage)}"
        layout.outputs.append(cols.add(term, (bmax, units), title, "forward", _sample_labels(bmax, units)))
    out_units = layout.outputs[-1].shape[1]
    if loss.kind == "bce":
        title = "ℓ = −[y·ln ŷ + (1−y)·ln(1−ŷ)]"
        layout.ell = cols.add("ell", (bmax, out_units), title, "loss", _sample_labels(bmax, out_units))
    loss_eq, grad_eq = fx.loss_equations(loss)
    layout.loss = cols.add("loss.L", (1,), loss_eq, "loss", ["L"])

    for index in range(len(stages) - 1, -1, -1):
        stage = stages[index]
        units = layout.outputs[index].shape[1]
        title = grad_eq if index == len(stages) - 1 else f"∂L/∂{symbols[index]}"
        term = f"{stage.name}.dL_d{output_suffix(stage)}"
        layout.out_grads[index] = cols.add(
            term, (bmax, units), title, "backward", _sample_labels(bmax, units)
        )
        if isinstance(stage.layer, Dense):
            for short, shape, symbol in shape_of(stage).params(stage):
                layout.param_grads[f"{stage.name}.{short}"] = cols.add(
                    f"{stage.name}.dL_d{short}", shape, f"∂L/∂{symbol}", "backward", _param_labels(shape)
                )
    layout.dx = cols.add("input.dL_dx", (bmax, n_in), "∂L/∂x", "backward", _sample_labels(bmax, n_in))

    clip = rule.clip
    if clip is not None:
        if clip.max_norm is not None:
            layout.clip_norm = cols.add("clip.total_norm", (1,), "‖g‖ (before clipping)", "update", ["‖g‖"])
            layout.clip_coefficient = cols.add(
                "clip.coefficient", (1,), "min(max_norm/(‖g‖ + 10⁻⁶), 1)", "update", ["coef"]
            )
        for name, shape, symbol in table:
            title = f"ĝ[{symbol}] (clipped ∂L/∂{symbol})"
            layout.clipped[name] = cols.add(f"clip.grad.{name}", shape, title, "update", _param_labels(shape))
    kind = optimizer.kind
    for key, state_symbol in rule.state_keys(optimizer):
        for name, shape, symbol in table:
            layout.state[(key, name)] = cols.add(
                f"{kind}.{key}.{name}", shape, f"{state_symbol}[{symbol}]", "state", _param_labels(shape)
            )
    for name, shape, symbol in table:
        layout.next[name] = cols.add(f"{name}_next", shape, f"{symbol}′", "update", _param_labels(shape))
    for key, _ in rule.scalars(layout.hyper_names, "1"):
        layout.scalars[key] = cols.add(f"{kind}.{key}", (1,), f"{kind}.{key}", "state", [key])
    layout.torch = cols.add("torch.L", (1,), "torch's L", "torch", ["L"])
    layout.delta = cols.add("delta.L", (1,), "|Δ| of L", "delta", ["|Δ|"])


def _data_block(grid: Grid, layout: _Layout, data: object, left: int) -> None:
    """The data rows (inputs too), to the right of the steps: ``x_data`` and ``y_data``."""
    x = np.asarray(data.x, dtype=float)  # type: ignore[attr-defined]
    y = np.asarray(data.y, dtype=float)  # type: ignore[attr-defined]
    n, n_in, n_out = x.shape[0], x.shape[1], y.shape[1]
    header, first = layout.first - 2, layout.first
    if left + n_in + n_out > EXCEL_MAX_COLS:
        raise fx.TooLarge(f"the data block would end past Excel's {EXCEL_MAX_COLS:,} columns")
    if first + n - 1 > EXCEL_MAX_ROWS:
        raise fx.TooLarge(f"{n:,} data rows do not fit on the sheet")
    grid.text(header, left, "data (inputs)", "header")
    grid.text(header + 1, left, "row", "header")
    for i in range(n_in):
        grid.text(header + 1, left + 1 + i, f"x{i + 1}", "header")
    for j in range(n_out):
        grid.text(header + 1, left + 1 + n_in + j, f"y{j + 1}", "header")
    for r in range(n):
        grid.set(first + r, left, r + 1, "header")
    grid.block(first, left + 1, x, "input")
    grid.block(first, left + 1 + n_in, y, "input")
    grid.name("x_data", first, left + 1, n, n_in)
    grid.name("y_data", first, left + 1 + n_in, n, n_out)


class _Row:
    """The formulas of one step row ``t``."""

    def __init__(self, grid: Grid, layout: _Layout, experiment: Experiment, t: int) -> None:
        self.grid, self.layout, self.t = grid, layout, t
        self.row = layout.first + t - 1
        self.batch = np.asarray(experiment.spec["batches"][t - 1])
        self.n = len(self.batch)
        self.loss = experiment.spec["loss"]
        self.optimizer = experiment.spec["optimizer"]

    def cell(self, group: Group, flat: int, row: int | None = None) -> str:
        return address(self.row if row is None else row, group.col(flat))

    def sample(self, group: Group, s: int, j: int) -> str:
        return address(self.row, group.sample_col(s, j))

    def put(
        self, group: Group, flat: int, body: str, style: str, term: str | None = None, step: int = 0
    ) -> None:
        col = group.col(flat)
        self.grid.set(self.row, col, fx.formula(body), style)
        if term is not None:
            self.grid.check(self.row, col, step or self.t, term, flat)

    def write(self, torch_loss: float) -> None:
        layout, grid, row, t = self.layout, self.grid, self.row, self.t
        assert layout.rows is not None and layout.torch is not None and layout.delta is not None
        assert layout.loss is not None
        grid.set(row, 1, t, "header")
        for s in range(self.n):
            grid.set(row, layout.rows.col(s), int(self.batch[s]) + 1)
        self.weights_before()
        self.inputs()
        self.forward()
        self.loss_terms()
        self.backward()
        self.update()
        grid.set(row, layout.torch.col(0), torch_loss, "torch")
        delta = fx.absolute_difference(self.cell(layout.loss, 0), self.cell(layout.torch, 0))
        self.put(layout.delta, 0, delta, "delta")

    def weights_before(self) -> None:
        """Row 1 reads the initial input cells; row t reads row t − 1's updated weights."""
        for name, shape, _ in self.layout.table:
            group = self.layout.before[name]
            width = shape[1] if len(shape) == 2 else 1
            for flat in range(group.size):
                if self.t == 1:
                    top, left = self.layout.initial[name]
                    source = address(top + flat // width, left + flat % width, absolute=True)
                    self.put(group, flat, source, "update")
                else:
                    # NOTE: a fixed row ($), so that no two rows of this column read alike. LibreOffice
                    # (7.4) computes a run of like formulas down a column ("formula group") in
                    # threads, and a group that reads the row above of another group that reads it
                    # back came out as 0s (xor batch, 1000 steps); a column of distinct formulas is
                    # computed cell by cell, in dependency order.
                    source = _fixed_row(self.row - 1, self.layout.next[name].col(flat))
                    self.put(group, flat, source, "update", f"{name}_next", self.t - 1)

    def inputs(self) -> None:
        """x and y of each sample, looked up in the data block by the row number."""
        layout = self.layout
        assert layout.x is not None and layout.y is not None and layout.rows is not None
        n_in, n_out = layout.x.shape[1], layout.y.shape[1]
        for s in range(self.n):
            index = address(self.row, layout.rows.col(s))
            for i in range(n_in):
                self.put(layout.x, s * n_in + i, f"INDEX(x_data,{index},{i + 1})", "forward")
            for j in range(n_out):
                self.put(layout.y, s * n_out + j, f"INDEX(y_data,{index},{j + 1})", "forward")

    def forward(self) -> None:
        layout = self.layout
        for index, stage in enumerate(layout.stages):
            group = layout.outputs[index]
            units = group.shape[1]
            layer = stage.layer
            if isinstance(layer, Dense):
                source = layout.x if index == 0 else layout.outputs[index - 1]
                assert source is not None
                n_src = source.shape[1]
                weight = layout.before[f"{stage.name}.{'Wt' if layer.fold_bias else 'W'}"]
                w_cols = n_src + (1 if layer.fold_bias else 0)
                for s in range(self.n):
                    for j in range(units):
                        pairs = [
                            (self.sample(source, s, i), self.cell(weight, j * w_cols + i))
                            for i in range(n_src)
                        ]
                        body = fx.dot(pairs)  # z_j = Σᵢ xᵢ·Wⱼᵢ
                        if layer.fold_bias:
                            body += f"+{self.cell(weight, j * w_cols + n_src)}"  # + W̃ⱼ,in · 1
                        elif layer.bias:
                            body += f"+{self.cell(layout.before[f'{stage.name}.b'], j)}"  # + bⱼ
                        self.put(group, s * units + j, body, "forward", group.term)
            else:
                z = layout.outputs[index - 1]
                for s in range(self.n):
                    for j in range(units):
                        body = fx.activation(layer.kind, self.sample(z, s, j), layer.slope)
                        self.put(group, s * units + j, body, "forward", group.term)

    def loss_terms(self) -> None:
        layout = self.layout
        assert layout.loss is not None and layout.y is not None
        yhat, y = layout.outputs[-1], layout.y
        units = yhat.shape[1]
        count = self.n * units  # n: the elements of ŷ in this step
        if layout.ell is not None:
            for s in range(self.n):
                for j in range(units):
                    body = fx.bce_element(self.sample(y, s, j), self.sample(yhat, s, j))
                    self.put(layout.ell, s * units + j, body, "loss")
            ell = area(self.row, layout.ell.left, 1, count)
            self.put(layout.loss, 0, fx.bce_loss(self.loss, [ell], count), "loss", "loss.L")
            return
        pairs = [
            (area(self.row, yhat.sample_col(s, 0), 1, units), area(self.row, y.sample_col(s, 0), 1, units))
            for s in range(self.n)
        ]
        self.put(layout.loss, 0, fx.mse_loss(self.loss, pairs, count), "loss", "loss.L")

    def backward(self) -> None:
        layout = self.layout
        stages = layout.stages
        assert layout.y is not None and layout.x is not None and layout.dx is not None
        yhat = layout.outputs[-1]
        for index in range(len(stages) - 1, -1, -1):
            stage = stages[index]
            group = layout.out_grads[index]
            units = group.shape[1]
            if index == len(stages) - 1:  # ∂L/∂ŷ
                count = self.n * units
                for s in range(self.n):
                    for j in range(units):
                        body = fx.loss_gradient(
                            self.loss, self.sample(yhat, s, j), self.sample(layout.y, s, j), count
                        )
                        self.put(group, s * units + j, body, "backward", group.term)
            elif isinstance(stages[index + 1].layer, Activation):  # ∂L/∂z = ∂L/∂a ⊙ f′(z)
                act = stages[index + 1].layer
                upstream, a, z = layout.out_grads[index + 1], layout.outputs[index + 1], layout.outputs[index]
                for s in range(self.n):
                    for j in range(units):
                        body = fx.times_derivative(
                            act.kind,
                            self.sample(upstream, s, j),
                            self.sample(z, s, j),
                            self.sample(a, s, j),
                            act.slope,
                        )
                        self.put(group, s * units + j, body, "backward", group.term)
            else:  # ∂L/∂a = ∂L/∂z⁽ⁿᵉˣᵗ⁾ · W⁽ⁿᵉˣᵗ⁾
                self.input_gradient(group, stages[index + 1], layout.out_grads[index + 1])
            if isinstance(stage.layer, Dense):
                source = layout.x if index == 0 else layout.outputs[index - 1]
                self.parameter_gradients(stage, group, source)
        self.input_gradient(layout.dx, stages[0], layout.out_grads[0])

    def parameter_gradients(self, stage: Stage, g: Group, source: Group) -> None:
        """∂L/∂W = Σ over samples of ∂L/∂z ⊗ input (the folded column: Σ ∂L/∂z), ∂L/∂b = Σ ∂L/∂z."""
        n_src = source.shape[1]
        for short, shape, _ in shape_of(stage).params(stage):
            group = self.layout.param_grads[f"{stage.name}.{short}"]
            term = f"{stage.name}.dL_d{short}"
            if short == "b":
                for j in range(shape[0]):
                    body = fx.total([self.sample(g, s, j) for s in range(self.n)])
                    self.put(group, j, body, "backward", term)
                continue
            for j in range(shape[0]):
                for i in range(shape[1]):
                    if i < n_src:
                        body = fx.dot(
                            [(self.sample(g, s, j), self.sample(source, s, i)) for s in range(self.n)]
                        )
                    else:  # the folded bias column: ∂L/∂z × the constant 1
                        body = fx.total([self.sample(g, s, j) for s in range(self.n)])
                    self.put(group, j * shape[1] + i, body, "backward", term)

    def input_gradient(self, group: Group, stage: Stage, upstream: Group) -> None:
        """∂L/∂(input of the Dense ``stage``) = ∂L/∂z · W (W̃ without its bias column)."""
        layer = stage.layer
        weight = self.layout.before[f"{stage.name}.{'Wt' if layer.fold_bias else 'W'}"]
        w_cols = layer.in_features + (1 if layer.fold_bias else 0)
        units = group.shape[1]
        for s in range(self.n):
            for i in range(units):
                pairs = [
                    (self.sample(upstream, s, j), self.cell(weight, j * w_cols + i))
                    for j in range(layer.out_features)
                ]
                self.put(group, s * units + i, fx.dot(pairs), "backward", group.term)

    def clip(self) -> dict[str, Group]:
        """The clipped gradients ĝ (with ‖g‖ and the coefficient for clipping by norm): the
        gradients the update reads."""
        layout, clip = self.layout, self.layout.rule.clip
        if clip is None:
            return layout.param_grads
        coefficient = None
        if layout.clip_norm is not None and layout.clip_coefficient is not None:
            cells = [
                self.cell(layout.param_grads[name], flat)
                for name, _, _ in layout.table
                for flat in range(layout.param_grads[name].size)
            ]
            self.put(layout.clip_norm, 0, fx.clip_norm(clip, cells), "update", "clip.total_norm")
            norm = self.cell(layout.clip_norm, 0)
            self.put(layout.clip_coefficient, 0, fx.clip_coefficient(layout.hyper_names, norm), "update")
            coefficient = self.cell(layout.clip_coefficient, 0)
        for name, _, _ in layout.table:
            g, group = layout.param_grads[name], layout.clipped[name]
            for flat in range(g.size):
                body = fx.clipped(clip, layout.hyper_names, self.cell(g, flat), coefficient)
                self.put(group, flat, body, "update", f"clip.grad.{name}")
        return layout.clipped

    def update(self) -> None:
        """Clipping, the optimizer's state (reading the row above), the updated weights, its
        scalars (the lr in force: under a schedule, from the row above's)."""
        layout, rule = self.layout, self.layout.rule
        kind = self.optimizer.kind
        state_keys = rule.state_keys(self.optimizer)
        step = address(self.row, 1)
        grads = self.clip()
        hyper, lr_body = layout.hyper_names, ""
        if rule.schedule is not None:  # the update reads this row's η, which reads the row above's
            lr = layout.scalars["lr"]
            hyper = {**hyper, "lr": self.cell(lr, 0)}
            previous_lr = _fixed_row(self.row - 1, lr.col(0)) if self.t > 1 else None
            lr_body = fx.scheduled_lr(rule.schedule, layout.hyper_names, previous_lr, step)
        for name, _, _ in layout.table:
            p, g = layout.before[name], grads[name]
            for flat in range(p.size):
                groups = {key: layout.state[(key, name)] for key, _ in state_keys}
                # the state before the step: the row above, with a fixed row (see weights_before)
                previous = {
                    key: (_fixed_row(self.row - 1, group.col(flat)) if self.t > 1 else None)
                    for key, group in groups.items()
                }
                new_state = {key: self.cell(group, flat) for key, group in groups.items()}
                update = rule.build(self.cell(p, flat), self.cell(g, flat), hyper, previous, step, new_state)
                for key, body in update.state.items():
                    self.put(groups[key], flat, body, "state", f"{kind}.{key}.{name}")
                self.put(layout.next[name], flat, update.next, "update", f"{name}_next")
        for key, body in rule.scalars(layout.hyper_names, step):
            if key == "lr" and rule.schedule is not None:
                body = lr_body
            self.put(layout.scalars[key], 0, body, "state", f"{kind}.{key}")


def _fixed_row(row: int, col: int) -> str:
    """``(12, 3) -> 'C$12'``: a reference whose row does not move when the formula is copied."""
    return f"{get_column_letter(col)}${row}"
