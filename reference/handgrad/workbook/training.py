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
numbers) · every forward term (z⁽ˡ⁾ = Σᵢ xᵢ·Wⱼᵢ + bⱼ written out, a⁽ˡ⁾) · the loss's helper
columns (ℓ, log p, T: handgrad.workbook.loss_formulas) · L ·
every backward term (∂L/∂ŷ, ∂L/∂z⁽ˡ⁾, ∂L/∂W⁽ˡ⁾ = Σ over samples, ∂L/∂b⁽ˡ⁾, ∂L/∂a⁽ˡ⁻¹⁾, ∂L/∂x) ·
with clipping: ‖g‖ and the coefficient (by norm) and the clipped gradients ĝ · the optimizer's
state (reading the row above) and the updated weights · its scalars (t; the lr in force, which
under a schedule reads the row above's η and the update reads) · torch's L (a plain number) and
|Δ| of L by formula.

To the right of the steps sits the data block (``x_data``, ``y_data``; inputs too). Editing η,
an initial weight or a data value recomputes every row. ``grid.checks`` maps each term cell to its
(step, term, flat index). A run whose step row would not fit Excel (16,384 columns, 8,192-character
formulas) gets a Training sheet that says so, and the Trace sheet only.

Where the inputs, the column groups and the data block sit: :mod:`handgrad.workbook.training_layout`;
this module writes the formulas of each step row.
"""

from __future__ import annotations

import numpy as np
from openpyxl.utils import get_column_letter

from handgrad.contract.spec import Activation, Dense, SpecError, Stage
from handgrad.contract.stack import shape_of
from handgrad.harness import Experiment, Report
from handgrad.workbook import formulas as fx
from handgrad.workbook.grid import Grid, address, area
from handgrad.workbook.loss_formulas import LossCells, loss_formulas
from handgrad.workbook.row_stamp import RowRecorder, RowTemplate
from handgrad.workbook.training_layout import (
    EXCEL_MAX_ROWS,
    Group,
    Layout,
    data_block,
    layout_columns,
    layout_inputs,
)
from handgrad.workbook.walkthrough import live_stages

DEFAULT_LIVE_STEPS = 1000
SHEET_NAME = "Training"


def training_grid(experiment: Experiment, report: Report, live_steps: int = DEFAULT_LIVE_STEPS) -> Grid:
    """The Training sheet: the first ``live_steps`` steps of the run as live formulas (see the
    module docstring); ``report.loss_history`` gives torch's loss per step. A run too large for a
    sheet (a step's terms wider than Excel's columns, a formula longer than 8,192 characters) gets a
    Training sheet that says so instead."""
    stages = live_stages(experiment)
    if isinstance(live_steps, bool) or not isinstance(live_steps, (int, np.integer)) or live_steps < 0:
        raise SpecError("live_steps", f"expected an integer >= 0, got {live_steps!r}")
    batches = experiment.spec.batches
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
    optimizer, data, batches = spec.optimizer, spec.data, spec.batches
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
    layout = layout_inputs(grid, experiment, stages, rule, top=3)
    bmax = max((len(batches[t]) for t in range(rows)), default=1)
    layout_columns(grid, layout, experiment, bmax)
    if layout.first + rows - 1 > EXCEL_MAX_ROWS:
        raise fx.TooLarge(
            f"{rows:,} live rows do not fit Excel's {EXCEL_MAX_ROWS:,} rows (lower --live-steps)"
        )
    assert layout.torch is not None and layout.delta is not None and layout.x is not None
    data_block(grid, layout, data, layout.delta.left + 2)
    # freeze the step and its data rows only: the weights' columns scroll, so a laptop screen
    # shows the terms (freezing through x held 15-18 columns, about 1,500 px)
    grid.freeze = address(layout.first, layout.rows.left + layout.rows.size)
    _write_rows(grid, layout, experiment, [float(report.loss_history[t][1]) for t in range(rows)])
    return grid


def _write_rows(grid: Grid, layout: Layout, experiment: Experiment, torch_losses: list[float]) -> None:
    """Every step row: built formula by formula until a row of its batch size has been
    reproduced by the template of the row before (workbook/row_stamp.py), then stamped."""
    templates: dict[int, RowTemplate | None] = {}  # by batch size; None: stamping it failed once
    for t, torch_loss in enumerate(torch_losses, start=1):
        row = _Row(grid, layout, experiment, t)
        plain = row.plain_values(torch_loss)
        template = templates.get(row.n)
        if t > 2 and template is not None and template.verified:
            template.stamp(grid, row.row, t, plain)
            continue
        recorder = RowRecorder(row.row, t)
        row.grid = recorder
        row.write(torch_loss)
        recorder.replay(grid)
        if t == 1 or (row.n in templates and template is None):
            continue  # row 1 reads the input cells, not a row above
        if template is None:
            templates[row.n] = RowTemplate.of(recorder)
        elif template.matches(recorder, plain):
            template.verified = True
        else:
            templates[row.n] = None


class _Row:
    """The formulas of one step row ``t``."""

    def __init__(self, grid: Grid | RowRecorder, layout: Layout, experiment: Experiment, t: int) -> None:
        self.grid, self.layout, self.t = grid, layout, t
        self.row = layout.first + t - 1
        self.batch = np.asarray(experiment.spec.batches[t - 1])
        self.n = len(self.batch)
        self.loss = experiment.spec.loss
        self.optimizer = experiment.spec.optimizer

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

    def plain_values(self, torch_loss: float) -> dict[int, object]:
        """The row's plain numbers by column: the step, the data rows, torch's L."""
        layout = self.layout
        assert layout.rows is not None and layout.torch is not None
        plain: dict[int, object] = {1: self.t}
        for s in range(self.n):
            plain[layout.rows.col(s)] = int(self.batch[s]) + 1
        plain[layout.torch.col(0)] = torch_loss
        return plain

    def write(self, torch_loss: float) -> None:
        layout, grid, row = self.layout, self.grid, self.row
        assert layout.rows is not None and layout.torch is not None and layout.delta is not None
        assert layout.loss is not None
        plain = self.plain_values(torch_loss)
        grid.set(row, 1, plain[1], "header")
        for s in range(self.n):
            grid.set(row, layout.rows.col(s), plain[layout.rows.col(s)])
        self.weights_before()
        self.inputs()
        self.forward()
        self.loss_terms()
        self.backward()
        self.update()
        grid.set(row, layout.torch.col(0), plain[layout.torch.col(0)], "torch")
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
        """The loss's helper columns (ℓ, log p, T, ...), then L; keeps the cells ∂L/∂ŷ reads."""
        layout = self.layout
        assert layout.loss is not None and layout.y is not None
        yhat, y = layout.outputs[-1], layout.y
        units, n_y = yhat.shape[1], y.shape[1]
        lf = loss_formulas(self.loss)
        self.loss_cells = cells = LossCells(
            [[self.sample(yhat, s, j) for j in range(units)] for s in range(self.n)],
            [[self.sample(y, s, k) for k in range(n_y)] for s in range(self.n)],
            [
                (area(self.row, yhat.sample_col(s, 0), 1, units), area(self.row, y.sample_col(s, 0), 1, n_y))
                for s in range(self.n)
            ],
        )
        for helper in lf.helpers(units, n_y):
            group, width = layout.loss_helpers[helper.key], helper.width
            for s in range(self.n):
                for k, body in enumerate(lf.helper(helper.key, cells, s)):
                    self.put(group, s * width + k, body, "loss", helper.term)
            helper_cells = [[self.sample(group, s, k) for k in range(width)] for s in range(self.n)]
            cells.add(helper.key, helper_cells, [area(self.row, group.left, 1, self.n * width)])
        self.put(layout.loss, 0, lf.total(cells), "loss", "loss.L")

    def backward(self) -> None:
        layout = self.layout
        stages = layout.stages
        assert layout.y is not None and layout.x is not None and layout.dx is not None
        for index in range(len(stages) - 1, -1, -1):
            stage = stages[index]
            group = layout.out_grads[index]
            units = group.shape[1]
            if index == len(stages) - 1:  # ∂L/∂ŷ
                lf = loss_formulas(self.loss)
                for s in range(self.n):
                    for j in range(units):
                        body = lf.gradient(self.loss_cells, s, j)
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
