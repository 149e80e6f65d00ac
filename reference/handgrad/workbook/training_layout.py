"""Where everything of the Training sheet sits (:mod:`handgrad.workbook.training` writes the
formulas of each step row): the input cells (η and every hyper-parameter, the initial weights),
the column groups of a step row with their two header rows (the term's symbol over its columns,
coloured by phase; then each column's element, in torch's flat order), and the data block
(``x_data``, ``y_data``) to the right of the steps. A layout past Excel's 16,384 columns or
1,048,576 rows raises :class:`handgrad.workbook.formulas.TooLarge`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from handgrad.contract.spec import Dense, Stage
from handgrad.contract.stack import param_table, shape_of, sup
from handgrad.harness import Experiment
from handgrad.workbook import formulas as fx
from handgrad.workbook.grid import Grid
from handgrad.workbook.loss_formulas import loss_formulas
from handgrad.workbook.walkthrough import output_suffix

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


class Columns:
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


def sample_labels(samples: int, units: int) -> list[str]:
    return [f"s{s + 1}·{j + 1}" for s in range(samples) for j in range(units)]


def param_labels(shape: tuple[int, ...]) -> list[str]:
    if len(shape) == 1:
        return [f"[{j + 1}]" for j in range(shape[0])]
    return [f"[{i + 1},{j + 1}]" for i in range(shape[0]) for j in range(shape[1])]


@dataclass
class Layout:
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
    loss_helpers: dict[str, Group] = field(default_factory=dict)  # ℓ, log p, T, ... by key
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


def layout_inputs(
    grid: Grid, experiment: Experiment, stages: list[Stage], rule: fx.UpdateRule, top: int
) -> Layout:
    """η (and any other hyper-parameter) and the initial weights as input cells, from row ``top``."""
    optimizer = experiment.spec.optimizer
    hyper_names: dict[str, str] = {}
    for hyper in rule.hyper(optimizer):
        grid.text(top, 1, f"{hyper.symbol} ({hyper.name})", "header")
        grid.set(top, 2, hyper.value, "input")
        grid.name(hyper.name, top, 2)
        hyper_names[hyper.key] = hyper.name
        top += 1
    top += 1
    table = param_table(experiment.spec.network)
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
    return Layout(stages, table, rule, hyper_names, first=header + 2, initial=initial)


def layout_columns(grid: Grid, layout: Layout, experiment: Experiment, bmax: int) -> None:
    """Every column group of a step row, with its two header rows."""
    spec = experiment.spec
    loss, optimizer, data = spec.loss, spec.optimizer, spec.data
    stages, table, rule = layout.stages, layout.table, layout.rule
    n_in, n_out = data.x.shape[1], data.y.shape[1]
    cols = Columns(grid, layout.first - 2, 1)
    cols.add("step", (1,), "step", "header", ["t"])
    layout.rows = cols.add("rows", (bmax,), "data rows", "header", [f"s{s + 1}" for s in range(bmax)])
    for name, shape, symbol in table:
        layout.before[name] = cols.add(
            f"{name}:before", shape, f"{symbol} before the step", "update", param_labels(shape)
        )
    layout.x = cols.add("x", (bmax, n_in), "x", "forward", sample_labels(bmax, n_in))
    layout.y = cols.add("y", (bmax, n_out), "y", "forward", sample_labels(bmax, n_out))

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
        layout.outputs.append(cols.add(term, (bmax, units), title, "forward", sample_labels(bmax, units)))
    out_units = layout.outputs[-1].shape[1]
    lf = loss_formulas(loss)
    for helper in lf.helpers(out_units, n_out):
        labels = sample_labels(bmax, helper.width)
        key = helper.term or f"loss.{helper.key}"
        layout.loss_helpers[helper.key] = cols.add(key, (bmax, helper.width), helper.title, "loss", labels)
    loss_eq, grad_eq = lf.equations()
    layout.loss = cols.add("loss.L", (1,), loss_eq, "loss", ["L"])

    for index in range(len(stages) - 1, -1, -1):
        stage = stages[index]
        units = layout.outputs[index].shape[1]
        title = grad_eq if index == len(stages) - 1 else f"∂L/∂{symbols[index]}"
        term = f"{stage.name}.dL_d{output_suffix(stage)}"
        layout.out_grads[index] = cols.add(term, (bmax, units), title, "backward", sample_labels(bmax, units))
        if isinstance(stage.layer, Dense):
            for short, shape, symbol in shape_of(stage).params(stage):
                layout.param_grads[f"{stage.name}.{short}"] = cols.add(
                    f"{stage.name}.dL_d{short}", shape, f"∂L/∂{symbol}", "backward", param_labels(shape)
                )
    layout.dx = cols.add("input.dL_dx", (bmax, n_in), "∂L/∂x", "backward", sample_labels(bmax, n_in))

    clip = rule.clip
    if clip is not None:
        if clip.max_norm is not None:
            layout.clip_norm = cols.add("clip.total_norm", (1,), "‖g‖ (before clipping)", "update", ["‖g‖"])
            layout.clip_coefficient = cols.add(
                "clip.coefficient", (1,), "min(max_norm/(‖g‖ + 10⁻⁶), 1)", "update", ["coef"]
            )
        for name, shape, symbol in table:
            title = f"ĝ[{symbol}] (clipped ∂L/∂{symbol})"
            layout.clipped[name] = cols.add(f"clip.grad.{name}", shape, title, "update", param_labels(shape))
    kind = optimizer.kind
    for key, state_symbol in rule.state_keys(optimizer):
        for name, shape, symbol in table:
            layout.state[(key, name)] = cols.add(
                f"{kind}.{key}.{name}", shape, f"{state_symbol}[{symbol}]", "state", param_labels(shape)
            )
    for name, shape, symbol in table:
        layout.next[name] = cols.add(f"{name}_next", shape, f"{symbol}′", "update", param_labels(shape))
    for key, _ in rule.scalars(layout.hyper_names, "1"):
        layout.scalars[key] = cols.add(f"{kind}.{key}", (1,), f"{kind}.{key}", "state", [key])
    layout.torch = cols.add("torch.L", (1,), "torch's L", "torch", ["L"])
    layout.delta = cols.add("delta.L", (1,), "|Δ| of L", "delta", ["|Δ|"])


def data_block(grid: Grid, layout: Layout, data: object, left: int) -> None:
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
