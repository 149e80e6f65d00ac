"""The recurrent walkthrough: one training step of an RNN, GRU or LSTM unrolled in time, as live
formulas, one column band per time step.

Layout (rows are shared by every band, so column A's titles and row labels hold for all of them;
column A is frozen):

- a title, a note, the run's configuration and the phase-colour legend;
- the inputs, plain cells a reader may edit (style ``input``): η (defined name ``eta``), the clip
  threshold when there is one, the step's sequence lengths, each layer's W_ih, W_hh, b_ih, b_hh
  (torch's stacked layout: gate blocks i, f, g, o / r, z, n down the rows), the head's W_y and
  b_y; then, inside the bands, x_t and (many-to-many) y_t of every step, h₀ (and c₀) in band
  t = 0;
- band t = 1..T, forward (top to bottom): the mask m_t = [t ≤ length], x_t, per layer the
  cell's forward lines (:mod:`handgrad.workbook.recurrent_cells`: the pre-activations
  z = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh, the GRU's n block with r ⊙ (W_hn h + b_hn), the
  gates, c_t, h_t; a row past its length keeps its state: IF(m, new, old)); many-to-many: z_t,
  ŷ_t, y_t and the per-element loss ℓ_t (0 past the length);
- the loss band right of band T: many-to-one z = W_y h_n + b_y, ŷ, y, ℓ; L and the count n of
  the elements in the mean (real steps only);
- the backward pass runs right to left through the same bands, below the forward: ∂L/∂ŷ_t,
  ∂L/∂z_t, the head's ∂L/∂h_t, then per layer (top first) ∂L/∂h_t (what arrives from above plus
  what is carried back from band t+1), ∂L/∂c_t, ∂L/∂z of every gate, the gradient carried on
  to band t − 1 (in band 1 it is ∂L/∂h₀), and ∂L/∂x_t;
- below the bands: the parameter gradients (sums over the bands), then clipping (when the run
  clips), the optimizer's state, the updated parameters and its scalars, written by the
  shared blocks (:func:`handgrad.workbook.blocks.clip_blocks`, ``update_blocks``):
  each block with torch's values and |Δ| beside it.

The bands are laid out by :mod:`handgrad.workbook.recurrent_bands`. The weights before step k are
step k − 1's ``*_next`` terms (the writer captures k − 1 with every walkthrough step k), the
run's initial parameters at k = 1: the workbook never runs the hand side again.

Beside each computed term (below its hand block, in every band): torch's values (plain numbers,
style ``torch``, with the reference they came from: ``torch.nn``, ``torch-ops``, ...) and
|Δ| = |hand − torch| by formula. ``grid.checks`` maps each formula cell that computes a hand term
to (step, term, flat index) — per-step terms hold the rows active at t, in batch order, as the
term contract says.

Live at the sizes a person reads (:data:`LIMITS`); larger runs get the Trace sheet and the
gradient-through-time table (:func:`gradient_through_time_grid`, with a chart by
:func:`gradient_through_time_chart`): ‖∂L/∂h_t‖ per time step, vanishing gradients made visible.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

import numpy as np

from handgrad.contract import names as naming
from handgrad.contract.recurrent import HEAD, RecurrentModel, param_table
from handgrad.contract.runs import RecurrentRun
from handgrad.contract.spec import SpecError
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Clip
from handgrad.harness import Experiment
from handgrad.workbook import formulas as fx
from handgrad.workbook.blocks import (
    LEFT,
    Block,
    Captured,
    Sheet,
    clip_blocks,
    hyper_inputs,
    params_before,
    step_grids,
    update_blocks,
)
from handgrad.workbook.grid import Grid, area
from handgrad.workbook.recurrent_bands import Bands, StepData
from handgrad.workbook.recurrent_cells import CELL_TABLES, column_of, plus
from handgrad.workbook.slice_blocks import section, start_sheet
from handgrad.workbook.walkthrough import sheet_name

LIMITS = {"hidden": 4, "length": 8, "batch": 8, "inputs": 4, "outputs": 4, "layers": 2}


# --- what is live ---------------------------------------------------------------------------------


def recurrent_unsupported_reason(experiment: Experiment) -> str | None:
    """``None`` when the recurrent walkthrough can be written for this run, else why not."""
    spec = experiment.spec
    if not isinstance(spec, RecurrentRun):
        return "the recurrent walkthrough needs a recurrent run (handgrad.scenarios.recurrent)"
    if experiment.dtype != "float64":
        return "the live sheets recompute in double precision: run in float64"
    model: RecurrentModel = spec.model
    batch = max(len(rows) for rows in itertools.islice(spec.batches, 2_000_000))  # sizes repeat each epoch
    sizes = {
        "hidden": model.hidden_size,
        "length": spec.data.steps,
        "batch": batch,
        "inputs": model.input_size,
        "outputs": model.output_size,
        "layers": model.num_layers,
    }
    for key, value in sizes.items():
        if value > LIMITS[key]:
            return (
                f"{key} {value} is more than a person reads in a live walkthrough (at most {LIMITS[key]}): "
                "its terms are on the Trace sheet"
            )
    if model.output_activation not in fx.ACTIVATION_EQUATIONS:
        return f"no live formula for the output activation {model.output_activation!r}"
    clip = spec.optimizer.clip
    if clip is not None and clip.max_norm is not None and float(clip.norm_type) != 2.0:
        return f"live clipping by norm is written for the 2-norm only (this run: norm_type {clip.norm_type})"
    try:
        if spec.loss.kind not in ("mse", "bce") or spec.loss.reduction == "none":
            loss = spec.loss
            raise SpecError("loss", f"no live formulas for loss {loss.kind!r} (reduction {loss.reduction})")
        fx.update_rule(spec.optimizer)
    except SpecError as error:
        return error.message
    return None


def recurrent_walkthrough_grids(
    experiment: Experiment, captured: Captured, steps: Iterable[int] | None = None
) -> list[Grid]:
    """One Grid per walkthrough step ("Walkthrough", "Walkthrough 50", ...); ``captured[k]`` is
    (hand trace, torch trace) of step k; ``steps`` defaults to the captured steps whose step
    before is captured too (and step 1)."""
    return step_grids(experiment, captured, steps, recurrent_unsupported_reason, recurrent_walkthrough_grid)


# --- gradients through time (for runs of any size) ------------------------------------------------


def gradient_through_time(
    trace: StepTrace, model: RecurrentModel, steps: int
) -> dict[str, list[tuple[int, float]]]:
    """Per layer, ‖∂L/∂h_t‖ (Frobenius, over the rows active at t) for every time step t = 1..steps
    of one training step: how much gradient reaches each step (vanishing gradients fall off
    toward t = 1). A step with no active row has no point."""
    result: dict[str, list[tuple[int, float]]] = {}
    for layer in range(model.num_layers):
        prefix = model.layer_name(layer)
        result[prefix] = [
            (t, float(np.linalg.norm(trace.value(f"{prefix}.dL_dh[{t}]"))))
            for t in range(1, steps + 1)
            if f"{prefix}.dL_dh[{t}]" in trace
        ]
    return result


GRADIENT_TITLE = "Gradient through time"


def gradient_through_time_grid(
    experiment: Experiment, captured: Mapping[int, tuple[StepTrace, StepTrace]]
) -> Grid:
    """A table: one row per time step t, one column per (training step, layer) of ‖∂L/∂h_t‖,
    hand and torch side by side. :func:`gradient_through_time_chart` draws it."""
    model: RecurrentModel = experiment.spec.model
    grid = Grid(GRADIENT_TITLE)
    grid.text(1, 1, "‖∂L/∂h_t‖ through time: the gradient that reaches each time step", "title")
    grid.text(
        2,
        1,
        "Per training step shown and per layer: the norm of ∂L/∂h_t over the sequences active at t "
        "(hand, then torch). Read right to left: a gradient that vanishes shrinks toward t = 1.",
        "note",
    )
    grid.set(4, 1, "t", "header")
    col = 2
    steps_t = experiment.spec.data.steps
    for t in range(1, steps_t + 1):
        grid.set(4 + t, 1, t, "header")
    for step in sorted(captured):
        hand, torch = captured[step]
        for side, trace in (("hand", hand), ("torch", torch)):
            for prefix, points in gradient_through_time(trace, model, steps_t).items():
                grid.text(4, col, f"step {step} {prefix} ({side})", "header")
                for t, value in points:
                    grid.set(4 + t, col, value, "backward" if side == "hand" else "torch")
                grid.widths[col] = 18
                col += 1
    grid.widths[1] = 8
    grid.freeze = "B5"
    return grid


def gradient_through_time_chart(grid: Grid) -> object:
    """An openpyxl line chart of :func:`gradient_through_time_grid`'s hand columns (log y axis),
    for ``worksheet.add_chart(chart, "B20")`` on the sheet written from ``grid``."""
    from openpyxl.chart import LineChart, Reference
    from openpyxl.utils import quote_sheetname

    chart = LineChart()
    chart.title = "‖∂L/∂h_t‖ through time"
    chart.x_axis.title = "time step t"
    chart.y_axis.title = "‖∂L/∂h_t‖"
    chart.y_axis.scaling.logBase = 10
    last_row = max(row for row, col in grid.cells if col == 1)
    sheet = quote_sheetname(grid.title)
    for (row, col), cell in sorted(grid.cells.items()):
        if row == 4 and col > 1 and str(cell.value).endswith("(hand)"):
            chart.add_data(
                Reference(range_string=f"{sheet}!{area(4, col, last_row - 3, 1, absolute=True)}"),
                titles_from_data=True,
            )
    chart.set_categories(Reference(range_string=f"{sheet}!{area(5, 1, last_row - 4, 1, absolute=True)}"))
    return chart


# --- the sheet --------------------------------------------------------------------------------------


def recurrent_walkthrough_grid(experiment: Experiment, step: int, captured: Captured) -> Grid:
    """The live walkthrough of one step (``captured[step]`` = (hand trace, torch trace))."""
    spec = experiment.spec
    model: RecurrentModel = spec.model
    loss, optimizer = spec.loss, spec.optimizer
    rule = fx.update_rule(optimizer)
    rows = np.asarray(spec.batches[step - 1])
    data = spec.data
    lengths = data.lengths[rows]
    H, L = model.hidden_size, model.num_layers
    given = spec.h0 is not None
    zeros = np.zeros((L, len(rows), H))
    config = (
        f"{model.cell}, {L} layer(s), input {model.input_size}, hidden {H}, {model.head} head of "
        f"{model.output_size} ({model.output_activation}), loss {loss.kind} ({loss.reduction}"
        f"{', ½' if loss.half else ''}), {optimizer.kind}, {_clip_text(rule.clip)}; batch of {len(rows)} "
        f"sequences (rows), lengths {lengths.tolist()} of padded length {data.x.shape[1]}; "
        "weights (out × in) and gate blocks stacked as torch"
    )
    lines = [
        f"Walkthrough of step {step}: {model.cell} through time, as live formulas",
        "Yellow cells are inputs: edit a weight, η, an input, a target or a length and every block "
        "recomputes. One column band per time step (t = 0 holds h₀); forward top to bottom, the "
        "backward pass below it, read right to left. Under each block: torch's values and |Δ|.",
        config,
    ]
    grid, sheet = start_sheet(sheet_name(step), step, max(model.input_size, H), captured, lines)
    grid.widths[1] = 46
    grid.freeze = "B1"
    hand, torch = captured[step]
    params = params_before(experiment, step, captured, [name for name, _, _ in param_table(model)])
    step_data = StepData(
        step,
        model,
        loss,
        hand,
        torch,
        data.x[rows],
        data.y[rows],
        lengths,
        spec.h0[:, rows] if given else zeros,
        spec.c0[:, rows] if given and model.cell == "lstm" else zeros,
        given,
        [f"seq {int(r) + 1}" for r in rows],
    )

    section(sheet, "Inputs (plain cells: edit them)")
    hyper_names = hyper_inputs(sheet, rule, optimizer)
    sheet.top += 1
    length_block = _length_inputs(sheet, step_data)
    weights = _weight_inputs(sheet, model, params, step)
    bands = Bands(grid, step_data, weights, length_block)
    sheet.top = bands.write(sheet.top + 1)

    table = param_table(model)
    section(sheet, "Parameter gradients: sums over the bands (t = 1..T) and the sequences")
    grads = _gradient_blocks(sheet, bands)
    sheet.top += 1
    if rule.clip is not None:
        grads = clip_blocks(sheet, rule.clip, table, grads, hyper_names)
    section(sheet, f"Update ({optimizer.kind}: {rule.equation})")
    update_blocks(sheet, captured, optimizer, rule, table, weights, grads, hyper_names)
    return grid


def _clip_text(clip: Clip | None) -> str:
    if clip is None:
        return "no clipping"
    if clip.max_norm is not None:
        return f"clip by norm {fx.number(clip.max_norm)}"
    return f"clip by value {fx.number(clip.value)}"


def _length_inputs(sheet: Sheet, data: StepData) -> Block:
    grid, top = sheet.grid, sheet.top
    grid.text(top, 1, "lengths of the step's sequences (1..T)", "header")
    grid.text(top, LEFT, "length", "header")
    block = Block(top + 1, LEFT, len(data.lengths), 1)
    for n, length in enumerate(data.lengths):
        grid.text(top + 1 + n, 1, data.row_labels[n], "header")
        grid.set(top + 1 + n, LEFT, int(length), "input")
    sheet.top = top + len(data.lengths) + 2
    return block


def _gate_rows(model: RecurrentModel) -> list[str]:
    gates = naming.GATES[model.cell] if model.gates > 1 else ("h",)
    return [f"{g}{u + 1}" for g in gates for u in range(model.hidden_size)]


def _weight_inputs(
    sheet: Sheet, model: RecurrentModel, params: dict[str, np.ndarray], step: int
) -> dict[str, Block]:
    """Each layer's W_ih | W_hh | b_ih | b_hh side by side (rows: gate units), then the head's
    W_y | b_y, as named input cells; returns the blocks by parameter name."""
    grid, H = sheet.grid, model.hidden_size
    symbols = {name: symbol for name, _, symbol in param_table(model)}
    when = "initial" if step == 1 else f"after step {step - 1}"
    blocks: dict[str, Block] = {}

    def row(title: str, row_labels: list[str], members: list[tuple[str, list[str], str]]) -> None:
        top = sheet.top
        grid.text(top, 1, title, "subtitle")
        for n, label in enumerate(row_labels):
            grid.text(top + 2 + n, 1, label, "header")
        left = LEFT
        for name, col_labels, defined in members:
            values = np.asarray(params[name], dtype=float)
            values = values.reshape(-1, 1) if values.ndim == 1 else values
            grid.text(top, left, symbols[name], "header")
            for j, label in enumerate(col_labels):
                grid.text(top + 1, left + j, label, "header")
            block = Block(top + 2, left, *values.shape)
            grid.block(block.top, block.left, values, "input")
            grid.name(defined, block.top, block.left, block.rows, block.cols)
            blocks[name] = block
            left += block.cols + 1
        sheet.top = top + len(row_labels) + 3

    for layer in range(model.num_layers):
        prefix = model.layer_name(layer)
        n_in = model.input_size if layer == 0 else H
        columns = {"W_ih": _labels("in", n_in), "W_hh": _labels("h", H), "b_ih": ["b_ih"], "b_hh": ["b_hh"]}
        row(
            f"layer {layer + 1} ({prefix}) parameters, {when}: rows are gate units",
            _gate_rows(model),
            [(f"{prefix}.{short}", labels, f"{short}_{layer + 1}") for short, labels in columns.items()],
        )
    row(
        f"head ({HEAD}) parameters, {when}: rows are outputs",
        _labels("out", model.output_size),
        [(f"{HEAD}.W", _labels("h", H), "W_y"), (f"{HEAD}.b", ["b_y"], "b_y")],
    )
    return blocks


def _labels(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{j + 1}" for j in range(count)]


def _gradient_blocks(sheet: Sheet, bands: Bands) -> dict[str, Block]:
    """∂L/∂θ of every parameter, summed over the bands and the sequences: the gate gradients
    times each band's input (and h_(t−1)), each a block of the shared
    :class:`handgrad.workbook.blocks.Sheet` (torch's values and |Δ| beside it). Returns the blocks
    by parameter name, for clipping and the update."""
    model, b, T, H = bands.data.model, bands.b, bands.T, bands.H
    table = CELL_TABLES[model.cell]
    gate_rows = _gate_rows(model)
    blocks: dict[str, Block] = {}

    def computed(
        name: str, title: str, cells: dict[tuple[int, int], str], cols: list[str], rows: list[str]
    ) -> None:
        layer, short = name.split(".", 1)
        shape = (len(rows), len(cols))
        blocks[name] = sheet.computed(f"{layer}.dL_d{short}", title, "backward", cells, shape, cols, rows)

    for layer in range(model.num_layers):
        prefix = model.layer_name(layer)
        GH = model.gates * H

        def gate(t: int, k: int, layer: int = layer) -> str:
            return column_of(b[(("da", layer), t)], k)

        def hidden(t: int, k: int, layer: int = layer) -> str:
            key, col = table.hidden_grad(k, H)
            return column_of(b[((key, layer), t)], col)

        def source(t: int, layer: int = layer) -> Block:
            return b[(("x",), t)] if layer == 0 else b[(("h", layer - 1), t)]

        n_in = source(1).cols
        inp = "x_t" if layer == 0 else f"h⁽{layer}⁾_t"
        hidden_note = "  (the n block: ∂L/∂(W_hn h + b_hn))" if model.cell == "gru" else ""
        bands_t = range(1, T + 1)
        cells = {
            (k, i): plus([f"SUMPRODUCT({gate(t, k)},{column_of(source(t), i)})" for t in bands_t])
            for k in range(GH)
            for i in range(n_in)
        }
        computed(f"{prefix}.W_ih", f"Σ_t (∂L/∂z_t)ᵀ·{inp}", cells, _labels("in", n_in), gate_rows)
        cells = {
            (k, j): plus(
                [f"SUMPRODUCT({hidden(t, k)},{column_of(b[(('h', layer), t - 1)], j)})" for t in bands_t]
            )
            for k in range(GH)
            for j in range(H)
        }
        computed(f"{prefix}.W_hh", f"Σ_t (∂L/∂z_t)ᵀ·h_(t−1){hidden_note}", cells, _labels("h", H), gate_rows)
        cells = {(k, 0): plus([f"SUM({gate(t, k)})" for t in bands_t]) for k in range(GH)}
        computed(f"{prefix}.b_ih", "Σ_t Σ over the sequences of ∂L/∂z_t", cells, ["b_ih"], gate_rows)
        cells = {(k, 0): plus([f"SUM({hidden(t, k)})" for t in bands_t]) for k in range(GH)}
        computed(
            f"{prefix}.b_hh", f"Σ_t Σ over the sequences of ∂L/∂z_t{hidden_note}", cells, ["b_hh"], gate_rows
        )

    top = model.num_layers - 1
    if bands.many:
        heads = [(b[(("dz",), t)], b[(("h", top), t)]) for t in range(1, T + 1)]
        title = "Σ_t (∂L/∂z_t)ᵀ·h_t of the top layer"
    else:
        heads = [(b[(("dz",), T + 1)], b[(("h", top), T)])]
        title = "(∂L/∂z)ᵀ·h_n of the top layer"
    O = model.output_size
    cells = {
        (o, j): plus([f"SUMPRODUCT({column_of(dz, o)},{column_of(h, j)})" for dz, h in heads])
        for o in range(O)
        for j in range(H)
    }
    computed(f"{HEAD}.W", title, cells, _labels("h", H), _labels("out", O))
    cells = {(o, 0): plus([f"SUM({column_of(dz, o)})" for dz, _ in heads]) for o in range(O)}
    computed(f"{HEAD}.b", "Σ over the sequences (and steps) of ∂L/∂z", cells, ["b_y"], _labels("out", O))
    return blocks
