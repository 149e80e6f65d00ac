"""The Walkthrough sheets: one training step of a dense network as live formulas, block by block.

Layout of one sheet (rows go down in computation order; every block has the same three columns
of blocks, so the eye can run along a row):

- a title, a note on how to use the sheet, a legend of the phase colours;
- the inputs, plain cells a reader may edit (style ``input``): η (defined name ``eta``), the
  step's rows x (``x_in``; with the constant column of ones when the bias is folded) and y
  (``y_in``), each layer's weights before the step (``W_1`` with ``b_1`` as a column beside it,
  or the folded ``Wt_1`` = [W | b]);
- the blocks, each titled with its symbol and equation and coloured by phase: z⁽ˡ⁾ (``MMULT``
  in an array formula, a row per sample as torch: ``MMULT(x, TRANSPOSE(W)) + TRANSPOSE(b)``),
  a⁽ˡ⁾, L, ∂L/∂ŷ, ∂L/∂z⁽ˡ⁾, ∂L/∂W⁽ˡ⁾, ∂L/∂b⁽ˡ⁾, ∂L/∂a⁽ˡ⁻¹⁾, ∂L/∂x, with clipping ‖g‖ and
  the clipped gradients ĝ, the optimizer's state (momentum buffer, Adam's m and v, RMSprop's v,
  Adagrad's G, ... reading the state before the step, shown as input cells) and the updated
  weights, then its scalars (t, the lr in force: under a schedule η is the step's lr in force,
  an input);
- beside every computed block torch's values for the same term (plain numbers, style
  ``torch``) and |Δ| = |hand − torch| by formula (style ``delta``).

Every formula reads from the input cells, so editing one recomputes the whole step.
``grid.checks`` records the (step, term, flat index) each formula cell computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from handgrad.contract.runs import StackRun
from handgrad.contract.spec import Activation, Dense, Network, SpecError, Stage
from handgrad.contract.stack import param_table, sup
from handgrad.harness import Experiment
from handgrad.workbook import formulas as fx
from handgrad.workbook.blocks import (
    LEFT,
    Block,
    Captured,
    Cells,
    Sheet,
    check_complete,
    clip_blocks,
    flat_refs,
    hyper_inputs,
    params_before,
    step_grids,
    unit_labels,
    update_blocks,
    write_legend,
)
from handgrad.workbook.grid import Grid, area
from handgrad.workbook.loss_formulas import LossCells, LossFormulas, loss_formulas

# --- what a live sheet supports -----------------------------------------------------------------


def unsupported_reason(experiment: Experiment) -> str | None:
    """``None`` when the live sheets can be written for this run, else why not (one line)."""
    spec = experiment.spec
    if not isinstance(spec, StackRun):
        return "live formulas are written for dense networks only (this run has no dense network spec)"
    for stage in spec.network.stages():
        if not isinstance(stage.layer, (Dense, Activation)):
            kind = type(stage.layer).__name__
            return f"live formulas are written for dense networks only ({stage.name} is {kind})"
    try:
        fx.update_rule(spec.optimizer)
        loss_formulas(spec.loss)
    except SpecError as error:
        return error.message
    if str(np.dtype(experiment.dtype)) != "float64":
        # a spreadsheet computes in float64: its cells would differ from a float32 run's terms by
        # float32's rounding, far above the 1e-12 every live cell is checked to
        return f"a spreadsheet computes in float64 and this run is {experiment.dtype} (see the Trace)"
    data = spec.data
    if data is None or np.asarray(data.x).ndim != 2:
        return "live formulas need the run's data as rows of features"
    return None


def live_stages(experiment: Experiment) -> list[Stage]:
    """The network's stages, or a SpecError when the live sheets cannot be written for it."""
    reason = unsupported_reason(experiment)
    if reason is not None:
        raise SpecError("workbook", reason)
    return experiment.spec.network.stages()


def output_suffix(stage: Stage) -> str:
    return "a" if isinstance(stage.layer, Activation) else "z"


def sheet_name(step: int) -> str:
    return "Walkthrough" if step == 1 else f"Walkthrough {step}"


def walkthrough_grids(
    experiment: Experiment, captured: Captured, steps: Iterable[int] | None = None
) -> list[Grid]:
    """One Grid per walkthrough step ("Walkthrough" for step 1, "Walkthrough 50", ...).

    ``captured[k]`` is (hand trace, torch trace) of step k, with step k − 1 beside every step k > 1
    (the weights and optimizer state before step k); ``steps`` defaults to
    :func:`~handgrad.workbook.blocks.default_steps` of ``captured``.
    """
    return step_grids(experiment, captured, steps, unsupported_reason, walkthrough_grid)


# --- one sheet --------------------------------------------------------------------------------


def walkthrough_grid(experiment: Experiment, step: int, captured: Captured) -> Grid:
    """The live walkthrough of one step (``captured[step]`` = (hand trace, torch trace))."""
    stages = live_stages(experiment)
    if step not in captured:
        raise SpecError("walkthrough", f"step {step} was not captured (the run has {experiment.steps} steps)")
    hand, torch = captured[step]
    spec = experiment.spec
    network: Network = spec.network
    loss = spec.loss
    optimizer = spec.optimizer
    rule = fx.update_rule(optimizer)
    data = spec.data
    rows_used = np.asarray(spec.batches[step - 1])
    x = np.asarray(data.x[rows_used], dtype=float)
    y = np.asarray(data.y[rows_used], dtype=float)
    n_samples = x.shape[0]
    table = param_table(network)
    params = params_before(experiment, step, captured, [name for name, _, _ in table])
    symbols = {name: symbol for name, _, symbol in table}
    folded = any(isinstance(s.layer, Dense) and s.layer.fold_bias for s in stages)
    x_ones = _next_is_folded(stages, -1)

    # the widest computed block (with its column of ones): torch's blocks start to its right; the
    # input blocks (W with b beside it) may reach further, they have no torch block beside them
    widths = [x.shape[1] + (1 if x_ones else 0), y.shape[1], 1]
    for stage in stages:
        if isinstance(stage.layer, Dense):
            layer = stage.layer
            widths += [
                layer.in_features + (1 if layer.fold_bias else 0),
                layer.out_features + (1 if folded else 0),
            ]
    width = max(widths)

    grid = Grid(sheet_name(step))
    grid.widths[1] = 40
    sheet = Sheet(grid, step, width, hand, torch)
    for col in range(LEFT, sheet.delta_left + width):
        grid.widths[col] = 13

    sample_labels = [f"sample {i + 1} · data row {int(r) + 1}" for i, r in enumerate(rows_used)]
    grid.text(1, 1, f"Walkthrough of step {step}: one training step by hand, as live formulas", "title")
    grid.text(
        2,
        1,
        "Yellow cells are inputs: edit x, y, a weight or η and every block below recomputes. "
        "Beside each block: torch's values (plain numbers) and |Δ| = |hand − torch| by formula.",
        "note",
    )
    sizes = [network.input_shape[0]] + [layer.out_features for layer in network.dense_layers]
    kinds = [s.layer.kind for s in stages if isinstance(s.layer, Activation)]
    loss_text = f"{loss.kind} ({loss.reduction}{', ½' if loss.half else ''})"
    grid.text(
        3,
        1,
        f"network {'-'.join(map(str, sizes))}, activations {'/'.join(kinds) or 'none'}, loss {loss_text}, "
        f"{optimizer.kind}; bias {'folded: W̃ = [W | b], input [x; 1]' if folded else 'separate'}; "
        f"rows are samples (N × features), weights are (out × in), as torch",
        "note",
    )
    write_legend(grid, 4)
    sheet.top = 6

    # --- inputs ---------------------------------------------------------------------------------
    grid.text(sheet.top, 1, "Inputs (plain cells: edit them)", "title")
    sheet.top += 1
    hyper_names = hyper_inputs(sheet, rule, optimizer)
    sheet.top += 1

    x_title = "x: the step's input rows (N × in)" + ("; [x | 1] is the augmented input" if x_ones else "")
    x_block = sheet.inputs(x_title, x, unit_labels(x.shape[1], "in"), sample_labels)
    grid.name("x_in", x_block.top, x_block.left, x_block.rows, x_block.cols)
    if x_ones:
        grid.text(x_block.top - 1, x_block.left + x_block.cols, "1", "header")
        for i in range(n_samples):
            grid.set(x_block.top + i, x_block.left + x_block.cols, 1.0, "note")
    y_block = sheet.inputs(
        "y: the step's targets (N × out)", y, unit_labels(y.shape[1], "out"), sample_labels
    )
    grid.name("y_in", y_block.top, y_block.left, y_block.rows, y_block.cols)

    param_blocks: dict[str, Block] = {}
    for stage in stages:
        if not isinstance(stage.layer, Dense):
            continue
        layer, k = stage.layer, stage.k
        weight_rows = unit_labels(layer.out_features, "unit")
        in_labels = unit_labels(layer.in_features, "in")
        when = "the initial weights" if step == 1 else f"the weights after step {step - 1}"
        if layer.fold_bias:
            name = f"{stage.name}.Wt"
            block = sheet.inputs(
                f"{symbols[name]} = [W{sup(k)} | b{sup(k)}]: {when} (out × in+1)",
                params[name],
                [*in_labels, "bias"],
                weight_rows,
            )
            grid.name(f"Wt_{k}", block.top, block.left, block.rows, block.cols)
            param_blocks[name] = block
            continue
        name = f"{stage.name}.W"
        title = f"{symbols[name]}" + (f" and b{sup(k)}" if layer.bias else "") + f": {when} (out × in)"
        block = sheet.inputs(title, params[name], in_labels, weight_rows)
        grid.name(f"W_{k}", block.top, block.left, block.rows, block.cols)
        param_blocks[name] = block
        if layer.bias:
            b_name = f"{stage.name}.b"
            b_left = block.left + block.cols + 1
            grid.text(block.top - 1, b_left, symbols[b_name], "header")
            grid.block(block.top, b_left, params[b_name], "input")
            grid.name(f"b_{k}", block.top, b_left, layer.out_features, 1)
            param_blocks[b_name] = Block(block.top, b_left, layer.out_features, 1)
    sheet.top += 1

    # --- forward ----------------------------------------------------------------------------------
    grid.text(sheet.top, 1, "Forward", "title")
    sheet.top += 1
    outputs: list[Block] = []
    out_symbols: list[str] = []
    previous, previous_symbol = x_block, "x"
    for index, stage in enumerate(stages):
        layer = stage.layer
        if isinstance(layer, Dense):
            k = stage.k
            source = "x_in" if previous is x_block else previous.range()
            if layer.fold_bias:
                source = previous.range(extra=1)
                body = fx.mmult(source, fx.transpose(f"Wt_{k}"))
                equation = f"[{previous_symbol} | 1]·W̃{sup(k)}ᵀ"
            else:
                body = fx.mmult(source, fx.transpose(f"W_{k}"))
                equation = f"{previous_symbol}·W{sup(k)}ᵀ"
                if layer.bias:
                    body += f"+{fx.transpose(f'b_{k}')}"
                    equation += f" + b{sup(k)}ᵀ"
            block = sheet.computed(
                f"{stage.name}.z",
                f"{equation}   (MMULT; a row per sample, as torch)",
                "forward",
                {},
                (n_samples, layer.out_features),
                unit_labels(layer.out_features),
                sample_labels,
                array=body,
                ones_column=_next_is_folded(stages, index),
            )
        else:
            z_block = outputs[-1]
            kind, slope = layer.kind, layer.slope
            forward_eq = fx.ACTIVATION_EQUATIONS[kind][0]
            z = flat_refs(z_block, z_block.rows * z_block.cols)
            cells = {
                (i, j): fx.activation(kind, z[i * z_block.cols + j], slope)
                for i in range(z_block.rows)
                for j in range(z_block.cols)
            }
            label = f"s = {fx.number(slope)}" if kind == "leaky_relu" else ""
            block = sheet.computed(
                f"{stage.name}.a",
                f"f(z{sup(stage.k)}), f = {kind}: {forward_eq}  {label}".rstrip(),
                "forward",
                cells,
                (z_block.rows, z_block.cols),
                unit_labels(z_block.cols),
                sample_labels,
                ones_column=_next_is_folded(stages, index),
            )
        outputs.append(block)
        out_symbols.append(hand[f"{stage.name}.{output_suffix(stage)}"].symbol)
        previous, previous_symbol = block, out_symbols[-1]
    sheet.top += 1

    # --- loss ---------------------------------------------------------------------------------------
    grid.text(sheet.top, 1, "Loss", "title")
    sheet.top += 1
    yhat = outputs[-1]
    lf = loss_formulas(loss)
    loss_cells = sheet_loss_helpers(sheet, lf, yhat, y_block, sample_labels)
    loss_eq, grad_eq = lf.equations()
    equation = f"{loss_eq.split(' = ', 1)[1]}, {lf.count_note(loss_cells)}"
    sheet.computed("loss.L", equation, "loss", {(0, 0): lf.total(loss_cells)}, (1, 1), ["L"], ["L"])
    sheet.top += 1

    # --- backward -----------------------------------------------------------------------------------
    grid.text(sheet.top, 1, "Backward", "title")
    sheet.top += 1
    grads: dict[int, Block] = {}
    param_grads: dict[str, Block] = {}

    def dense_dx(index: int) -> tuple[str, str]:
        """∂L/∂(input of dense stage ``index``) = G·W (W̃ without its bias column when folded)."""
        stage = stages[index]
        layer = stage.layer
        g = grads[index].range()
        if layer.fold_bias:
            w = param_blocks[f"{stage.name}.Wt"].range(cols=layer.in_features)
            return fx.mmult(g, w), f"(∂L/∂z{sup(stage.k)})·W̃{sup(stage.k)}[:, :in]"
        return fx.mmult(g, f"W_{stage.k}"), f"(∂L/∂z{sup(stage.k)})·W{sup(stage.k)}"

    last = len(stages) - 1
    for index in range(last, -1, -1):
        stage = stages[index]
        suffix = output_suffix(stage)
        term = f"{stage.name}.dL_d{suffix}"
        out = outputs[index]
        shape = (out.rows, out.cols)
        labels = unit_labels(out.cols)
        if index == last:
            cells = {(i, j): lf.gradient(loss_cells, i, j) for i in range(out.rows) for j in range(out.cols)}
            block = sheet.computed(
                term, f"{grad_eq}, ŷ = {out_symbols[index]}", "backward", cells, shape, labels, sample_labels
            )
        elif isinstance(stages[index + 1].layer, Activation):
            act = stages[index + 1].layer
            g_next, a_next = grads[index + 1], outputs[index + 1]
            size = out.rows * out.cols
            assert (g_next.rows, g_next.cols) == (a_next.rows, a_next.cols) == (out.rows, out.cols)
            g, z, a = flat_refs(g_next, size), flat_refs(out, size), flat_refs(a_next, size)
            cells = {
                (i, j): fx.times_derivative(act.kind, g[k], z[k], a[k], act.slope)
                for i in range(out.rows)
                for j in range(out.cols)
                for k in (i * out.cols + j,)
            }
            derivative = fx.ACTIVATION_EQUATIONS[act.kind][1]
            equation = f"∂L/∂{out_symbols[index + 1]} ⊙ f′({out_symbols[index]}), {derivative}"
            block = sheet.computed(term, equation, "backward", cells, shape, labels, sample_labels)
        else:
            body, equation = dense_dx(index + 1)
            block = sheet.computed(term, equation, "backward", {}, shape, labels, sample_labels, array=body)
        grads[index] = block
        if not isinstance(stage.layer, Dense):
            continue
        layer, k = stage.layer, stage.k
        source = x_block if index == 0 else outputs[index - 1]
        source_symbol = "x" if index == 0 else out_symbols[index - 1]
        g = block.range()
        in_labels = unit_labels(layer.in_features, "in")
        weight_rows = unit_labels(layer.out_features, "unit")
        if layer.fold_bias:
            name = f"{stage.name}.Wt"
            body = fx.mmult(fx.transpose(g), source.range(extra=1))
            param_grads[name] = sheet.computed(
                f"{stage.name}.dL_dWt",
                f"(∂L/∂z{sup(k)})ᵀ·[{source_symbol} | 1]",
                "backward",
                {},
                (layer.out_features, layer.in_features + 1),
                [*in_labels, "bias"],
                weight_rows,
                array=body,
            )
            continue
        name = f"{stage.name}.W"
        source_range = "x_in" if index == 0 else source.range()
        param_grads[name] = sheet.computed(
            f"{stage.name}.dL_dW",
            f"(∂L/∂z{sup(k)})ᵀ·{source_symbol}",
            "backward",
            {},
            (layer.out_features, layer.in_features),
            in_labels,
            weight_rows,
            array=fx.mmult(fx.transpose(g), source_range),
        )
        if layer.bias:
            cells = {
                (j, 0): f"SUM({area(block.top, block.left + j, block.rows, 1)})"
                for j in range(layer.out_features)
            }
            param_grads[f"{stage.name}.b"] = sheet.computed(
                f"{stage.name}.dL_db",
                f"Σ over the samples of ∂L/∂z{sup(k)}",
                "backward",
                cells,
                (layer.out_features, 1),
                ["b"],
                weight_rows,
            )
    body, equation = dense_dx(0)
    sheet.computed(
        "input.dL_dx",
        equation,
        "backward",
        {},
        (n_samples, x.shape[1]),
        unit_labels(x.shape[1], "in"),
        sample_labels,
        array=body,
    )
    sheet.top += 1

    grads: Mapping[str, Cells] = param_grads
    if rule.clip is not None:
        grads = clip_blocks(sheet, rule.clip, table, param_grads, hyper_names)

    # --- update ---------------------------------------------------------------------------------------
    grid.text(sheet.top, 1, f"Update ({optimizer.kind}: {rule.equation})", "title")
    sheet.top += 1
    update_blocks(sheet, captured, optimizer, rule, table, param_blocks, grads, hyper_names)
    check_complete(grid, hand, step)
    return grid


def sheet_loss_helpers(
    sheet: Sheet, lf: LossFormulas, yhat: Block, y_block: Block, sample_labels: list[str]
) -> LossCells:
    """The loss's helper blocks before L (ℓ, log p, T, ...: see handgrad.workbook.loss_formulas), a
    row per sample; a block with no torch term (every one but ℓ under reduction none) has no torch
    values beside it. Returns the cells the loss's L and ∂L/∂ŷ read."""
    grid = sheet.grid
    rows = range(yhat.rows)
    cells = LossCells(
        [[yhat.cell(i, j) for j in range(yhat.cols)] for i in rows],
        [[y_block.cell(i, k) for k in range(y_block.cols)] for i in rows],
        [(yhat.range(), "y_in")],
    )
    for helper in lf.helpers(yhat.cols, y_block.cols):
        bodies = {(i, k): body for i in rows for k, body in enumerate(lf.helper(helper.key, cells, i))}
        labels = unit_labels(helper.width)
        if helper.term is not None:
            shape = (yhat.rows, helper.width)
            equation = helper.title.split(" = ", 1)[-1]  # computed() writes "ℓ = " itself
            block = sheet.computed(helper.term, equation, "loss", bodies, shape, labels, sample_labels)
        else:
            grid.text(sheet.top, 1, f"{helper.title} (no torch term)", "loss")
            sheet.labels(sheet.top + 1, labels, sample_labels, yhat.rows, torch=False)
            block = Block(sheet.top + 2, LEFT, yhat.rows, helper.width)
            for (i, k), body in bodies.items():
                grid.set(block.top + i, block.left + k, fx.formula(body), "loss")
            sheet.top = block.top + block.rows + 1
        cells.add(
            helper.key, [[block.cell(i, k) for k in range(helper.width)] for i in rows], [block.range()]
        )
    return cells


def _next_is_folded(stages: list[Stage], index: int) -> bool:
    """Whether the stage after ``index`` is a Dense with a folded bias (it reads [out | 1])."""
    return (
        index + 1 < len(stages)
        and isinstance(stages[index + 1].layer, Dense)
        and stages[index + 1].layer.fold_bias
    )
