r"""The multitask walkthrough: one training step of the shared trunk and its two heads as live
formulas — the whole step (every row of the batch, every unit), both losses, their weighted sum,
the backward through both heads into the trunk, the parameter gradients and the update.

Inputs (plain cells, the hand side's values): the optimizer's hyper-parameters (η, ...), the loss
weights w₁, w₂ (names ``loss_w1``, ``loss_w2``), the step's rows x (``x_in``), head 1's targets y₁
(``y1_in``), head 2's class ids t (``t_in``, 0-based as torch), and each part's weights before the
step (``W_trunk`` with ``b_trunk`` beside it, ``W_head1``/``b_head1``, ``W_head2``/``b_head2``).
The blocks (checked against the trace unless marked):

    z⁽trunk⁾ = x W⁽trunk⁾ᵀ + b⁽trunk⁾ᵀ,  a⁽trunk⁾ = f(z⁽trunk⁾)
    ŷ₁ = a⁽trunk⁾ W⁽head1⁾ᵀ + b⁽head1⁾ᵀ,  z⁽head2⁾ = a⁽trunk⁾ W⁽head2⁾ᵀ + b⁽head2⁾ᵀ  (logits)
    L₁ = (1/n) Σ (ŷ₁ − y₁)²                                      (mse; sum, ½ as the spec says)
    onehot(t), m = max_c z⁽head2⁾, e = exp(z⁽head2⁾ − m), p = e / Σ_c e,
    ℓ = m + ln Σ_c e − z⁽head2⁾[t]                               (not traced: helper blocks)
    L₂ = (1/N) Σ ℓ,  L = w₁L₁ + w₂L₂
    ∂L/∂z⁽head1⁾ = w₁ ∂L₁/∂ŷ₁,  ∂L/∂z⁽head2⁾ = w₂ (p − onehot(t)) / N
    each head: ∂L/∂W = (∂L/∂z)ᵀ a⁽trunk⁾, ∂L/∂b = Σ over the rows, w_k ∂L_k/∂a⁽trunk⁾ = (∂L/∂z) W
    ∂L/∂a⁽trunk⁾ = w₁ ∂L₁/∂a⁽trunk⁾ + w₂ ∂L₂/∂a⁽trunk⁾          (the sum of the two heads' blocks)
    ∂L/∂z⁽trunk⁾ = ∂L/∂a⁽trunk⁾ ⊙ f′(z⁽trunk⁾), ∂L/∂W⁽trunk⁾, ∂L/∂b⁽trunk⁾, ∂L/∂x
    clipping (when asked), the optimizer's state and θ′ (the dense Walkthrough's update blocks)

What has no formulas here is refused with its reason (:func:`multitask_unsupported_reason`):
head 1's l1, smooth_l1 and huber, head 2's class weights and label smoothing, an optimizer the
sheets have no formulas for, float32, a batch of more than :data:`MAX_ROWS` rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from handgrad.contract.multitask import Multitask, param_table
from handgrad.contract.runs import MultitaskRun
from handgrad.contract.spec import SpecError
from handgrad.contract.trace import StepTrace
from handgrad.harness import Experiment
from handgrad.workbook import formulas as fx
from handgrad.workbook.blocks import (
    Block,
    Sheet,
    check_complete,
    clip_blocks,
    hyper_inputs,
    step_grids,
    update_blocks,
)
from handgrad.workbook.grid import Grid, area
from handgrad.workbook.loss_formulas import LossCells, loss_formulas
from handgrad.workbook.slice_blocks import (
    before,
    float64_reason,
    helper,
    labels,
    scalar_input,
    section,
    start_sheet,
)

MAX_ROWS = 256  # rows of one step's batch laid out live; more: every term is on the Trace


def multitask_unsupported_reason(experiment: Experiment) -> str | None:
    """``None`` when the multitask walkthrough can be written for this run, else why not."""
    spec = experiment.spec
    if not isinstance(spec, MultitaskRun):
        return "the multitask walkthrough needs a multitask run"
    model: Multitask = spec.model
    if model.loss1.kind != "mse":
        return f"no live spreadsheet formulas for head 1's loss {model.loss1.kind!r} yet (have: mse)"
    if model.loss2.weight is not None or model.loss2.label_smoothing:
        option = "class weights" if model.loss2.weight is not None else "label smoothing"
        return f"no live spreadsheet formulas for head 2's cross-entropy with {option} yet"
    classes = np.asarray(spec.data.y, dtype=float)[:, model.outputs]
    if np.any(classes == model.loss2.ignore_index):
        return "no live spreadsheet formulas for head 2's ignored rows (ignore_index) yet"
    try:
        fx.update_rule(spec.optimizer)
    except SpecError as error:
        return error.message
    largest = max(len(rows) for rows in spec.batches) if spec.batches else 0
    if largest > MAX_ROWS:
        return f"a batch of {largest} rows is more than the {MAX_ROWS} the live sheet lays out"
    return float64_reason(experiment)


def sheet_name(step: int) -> str:
    return "Multitask walkthrough" if step == 1 else f"Multitask walkthrough {step}"


def multitask_walkthrough_grids(
    experiment: Experiment,
    captured: Mapping[int, tuple[StepTrace, StepTrace]],
    steps: Iterable[int] | None = None,
) -> list[Grid]:
    """One Grid per walkthrough step; ``captured[k]`` is (hand trace, torch trace) of step k."""
    return step_grids(experiment, captured, steps, multitask_unsupported_reason, multitask_walkthrough_grid)


def _softmax_values(z: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """The helper blocks' cached values: the same computation as their formulas, in NumPy."""
    onehot = (t[:, None] == np.arange(z.shape[1])[None, :]).astype(float)  # N,C
    m = z.max(axis=1, keepdims=True)  # N,1
    e = np.exp(z - m)  # N,C
    total = e.sum(axis=1, keepdims=True)  # N,1
    ell = m + np.log(total) - (z * onehot).sum(axis=1, keepdims=True)  # N,1
    return {"onehot": onehot, "m": m, "e": e, "p": e / total, "ell": ell}


def multitask_walkthrough_grid(
    experiment: Experiment, step: int, captured: Mapping[int, tuple[StepTrace, StepTrace]]
) -> Grid:
    """The trunk, both heads, L = w₁L₁ + w₂L₂, the backward and the update of ``step``."""
    spec = experiment.spec
    model: Multitask = spec.model
    optimizer = spec.optimizer
    rule = fx.update_rule(optimizer)
    w1, w2 = model.weights
    rows_used = np.asarray(spec.batches[step - 1])
    x = np.asarray(spec.data.x[rows_used], dtype=float)
    y = np.asarray(spec.data.y[rows_used], dtype=float)
    y1, t = y[:, : model.outputs], y[:, model.outputs]
    n, hidden, outputs, classes = x.shape[0], model.hidden, model.outputs, model.classes
    table = param_table(model)
    symbols = {name: symbol for name, _, symbol in table}
    loss1, loss2 = model.loss1, model.loss2
    width = max(model.in_features, hidden, outputs, classes)
    grid, sheet = start_sheet(
        sheet_name(step),
        step,
        width,
        captured,
        [
            f"Multitask walkthrough of step {step}: the shared trunk, both heads and L = w₁L₁ + w₂L₂ "
            "as live formulas",
            f"The whole step: all N = {n} rows of the batch, all {hidden} trunk units, both heads. Yellow "
            "cells are inputs (the hand side's values): edit x, a target, a weight, w₁, w₂ or η and every "
            "block below recomputes.",
            f"model {model.in_features}-{hidden} trunk ({model.activation}) → head 1: {outputs} output(s), "
            f"mse ({loss1.reduction}{', ½' if loss1.half else ''}); head 2: {classes} classes, "
            f"cross-entropy ({loss2.reduction}); {optimizer.kind}; rows are samples (N × features), "
            "weights are (out × in), as torch",
        ],
    )
    hand = captured[step][0]
    samples = [f"sample {i + 1} · data row {int(r) + 1}" for i, r in enumerate(rows_used)]
    units = labels("unit", hidden)
    outs = labels("out", outputs)
    class_cols = [f"class id {c}" for c in range(classes)]

    section(sheet, "Inputs (plain cells: edit them)")
    hyper_names = hyper_inputs(sheet, rule, experiment.spec.optimizer)
    weight1 = scalar_input(sheet, "w₁ (head 1's loss weight, name loss_w1)", w1, "loss_w1")
    weight2 = scalar_input(sheet, "w₂ (head 2's loss weight, name loss_w2)", w2, "loss_w2")
    sheet.top += 1
    x_block = sheet.inputs("x: the step's input rows (N × in)", x, labels("in", x.shape[1]), samples)
    grid.name("x_in", x_block.top, x_block.left, x_block.rows, x_block.cols)
    y1_block = sheet.inputs("y₁: head 1's targets (N × out)", y1, outs, samples)
    grid.name("y1_in", y1_block.top, y1_block.left, y1_block.rows, y1_block.cols)
    t_block = sheet.inputs("t: head 2's class ids (N × 1, 0-based as torch)", t[:, None], ["t"], samples)
    grid.name("t_in", t_block.top, t_block.left, t_block.rows, 1)

    when = "the initial weights" if step == 1 else f"the weights after step {step - 1}"
    param_blocks: dict[str, Block] = {}
    for part, (n_out, n_in) in model.sizes().items():
        w_value = before(experiment, step, captured, f"{part}.W_next", experiment.initial_params[f"{part}.W"])
        b_value = before(experiment, step, captured, f"{part}.b_next", experiment.initial_params[f"{part}.b"])
        block = sheet.inputs(
            f"{symbols[f'{part}.W']} and {symbols[f'{part}.b']}: {when} (out × in)",
            w_value,
            labels("in", n_in),
            labels("unit", n_out),
        )
        grid.name(f"W_{part}", block.top, block.left, block.rows, block.cols)
        b_left = block.left + block.cols + 1
        grid.text(block.top - 1, b_left, symbols[f"{part}.b"], "header")
        grid.block(block.top, b_left, b_value, "input")
        grid.name(f"b_{part}", block.top, b_left, n_out, 1)
        param_blocks[f"{part}.W"] = block
        param_blocks[f"{part}.b"] = Block(block.top, b_left, n_out, 1)
    sheet.top += 1

    # --- forward ----------------------------------------------------------------------------------
    section(sheet, "Forward: the trunk, then both heads read a⁽trunk⁾")
    z_t = _dense(sheet, "trunk", "x_in", "x", (n, hidden), units, samples)
    act = {
        (i, j): fx.activation(model.activation, z_t.cell(i, j), model.slope)
        for i in range(n)
        for j in range(hidden)
    }
    slope = f"  s = {fx.number(model.slope)}" if model.activation == "leaky_relu" else ""
    a_t = sheet.computed(
        "trunk.a",
        f"f(z⁽trunk⁾), f = {model.activation}: {fx.ACTIVATION_EQUATIONS[model.activation][0]}{slope}",
        "forward",
        act,
        (n, hidden),
        units,
        samples,
    )
    z_1 = _dense(sheet, "head1", a_t.range(), "a⁽trunk⁾", (n, outputs), outs, samples)
    z_2 = _dense(sheet, "head2", a_t.range(), "a⁽trunk⁾", (n, classes), class_cols, samples)
    sheet.top += 1

    # --- loss ---------------------------------------------------------------------------------------
    section(sheet, "Loss: each head's own, then the weighted sum")
    count1 = n * outputs
    head1_loss = loss_formulas(loss1)  # mse (multitask_unsupported_reason)
    loss_eq, grad_eq = head1_loss.equations()
    head1_cells = LossCells(
        [[z_1.cell(i, j) for j in range(outputs)] for i in range(n)],
        [[y1_block.cell(i, j) for j in range(outputs)] for i in range(n)],
        [(z_1.range(), "y1_in")],
    )
    L1 = sheet.computed(
        "loss.L1",
        f"{loss_eq.split(' = ', 1)[1]} over head 1, ŷ = ŷ₁, y = y₁, n = {count1}",
        "loss",
        {(0, 0): head1_loss.total(head1_cells)},
        (1, 1),
        ["L₁"],
        ["L₁"],
    )
    cache = _softmax_values(np.asarray(hand.value("head2.z"), dtype=float), t)
    onehot = helper(
        sheet,
        "onehot(t): 1 in the column of the class id",
        "loss",
        lambda i, c: f"IF({t_block.cell(i, 0)}={c},1,0)",
        (n, classes),
        class_cols,
        samples,
        cache["onehot"],
    )
    m = helper(
        sheet,
        "m = max_c z⁽head2⁾ (the log-sum-exp shift)",
        "loss",
        lambda i, _: f"MAX({_row(z_2, i)})",
        (n, 1),
        ["m"],
        samples,
        cache["m"],
    )
    e = helper(
        sheet,
        "e = exp(z⁽head2⁾ − m)",
        "loss",
        lambda i, c: f"EXP({z_2.cell(i, c)}-{m.cell(i, 0)})",
        (n, classes),
        class_cols,
        samples,
        cache["e"],
    )
    p = helper(
        sheet,
        "p = softmax(z⁽head2⁾) = e / Σ_c e",
        "loss",
        lambda i, c: f"{e.cell(i, c)}/SUM({_row(e, i)})",
        (n, classes),
        class_cols,
        samples,
        cache["p"],
    )
    ell = helper(
        sheet,
        "ℓ = −ln p[t] = m + ln Σ_c e − z⁽head2⁾[t]",
        "loss",
        lambda i, _: f"{m.cell(i, 0)}+LN(SUM({_row(e, i)}))-SUMPRODUCT({_row(z_2, i)},{_row(onehot, i)})",
        (n, 1),
        ["ℓ"],
        samples,
        cache["ell"],
    )
    mean2 = loss2.reduction == "mean"
    L2 = sheet.computed(
        "loss.L2",
        f"{'(1/N)·' if mean2 else ''}Σ ℓ  (nn.CrossEntropyLoss on the logits, N = {n})",
        "loss",
        {(0, 0): f"SUM({ell.range()})/{n}" if mean2 else f"SUM({ell.range()})"},
        (1, 1),
        ["L₂"],
        ["L₂"],
    )
    sheet.computed(
        "loss.L",
        "the weighted sum (w₁, w₂ are inputs)",
        "loss",
        {(0, 0): f"{weight1}*{L1.cell(0, 0)}+{weight2}*{L2.cell(0, 0)}"},
        (1, 1),
        ["L"],
        ["L"],
    )
    sheet.top += 1

    # --- backward -----------------------------------------------------------------------------------
    section(sheet, "Backward: each head from its weighted loss, then the trunk from both")
    param_grads: dict[str, Block] = {}
    g1 = sheet.computed(
        "head1.dL_dz",
        f"w₁·∂L₁/∂ŷ₁, {grad_eq.split(' = ', 1)[1]}",
        "backward",
        {
            (i, j): f"{weight1}*({head1_loss.gradient(head1_cells, i, j)})"
            for i in range(n)
            for j in range(outputs)
        },
        (n, outputs),
        outs,
        samples,
    )
    da1 = _head_backward(sheet, "head1", g1, a_t, param_grads, units, samples)
    divisor = f"/{n}" if mean2 else ""
    g2 = sheet.computed(
        "head2.dL_dz",
        f"w₂·(p − onehot(t)){' / N' if mean2 else ''}  (softmax's gradient through ℓ)",
        "backward",
        {
            (i, c): f"{weight2}*({p.cell(i, c)}-{onehot.cell(i, c)}){divisor}"
            for i in range(n)
            for c in range(classes)
        },
        (n, classes),
        class_cols,
        samples,
    )
    da2 = _head_backward(sheet, "head2", g2, a_t, param_grads, units, samples)
    da = sheet.computed(
        "trunk.dL_da",
        "w₁·∂L₁/∂a⁽trunk⁾ + w₂·∂L₂/∂a⁽trunk⁾  (a⁽trunk⁾ feeds both heads: the two paths add)",
        "backward",
        {(i, j): f"{da1.cell(i, j)}+{da2.cell(i, j)}" for i in range(n) for j in range(hidden)},
        (n, hidden),
        units,
        samples,
    )
    dz = sheet.computed(
        "trunk.dL_dz",
        f"∂L/∂a⁽trunk⁾ ⊙ f′(z⁽trunk⁾), {fx.ACTIVATION_EQUATIONS[model.activation][1]}",
        "backward",
        {
            (i, j): fx.times_derivative(
                model.activation, da.cell(i, j), z_t.cell(i, j), a_t.cell(i, j), model.slope
            )
            for i in range(n)
            for j in range(hidden)
        },
        (n, hidden),
        units,
        samples,
    )
    _param_gradients(sheet, "trunk", dz, "x_in", "x", param_grads, labels("in", model.in_features))
    sheet.computed(
        "input.dL_dx",
        "(∂L/∂z⁽trunk⁾)·W⁽trunk⁾",
        "backward",
        {},
        (n, model.in_features),
        labels("in", model.in_features),
        samples,
        array=fx.mmult(dz.range(), "W_trunk"),
    )
    sheet.top += 1

    if rule.clip is not None:
        param_grads = clip_blocks(sheet, rule.clip, table, param_grads, hyper_names)
    section(sheet, f"Update ({optimizer.kind}: {rule.equation})")
    update_blocks(
        sheet, captured, experiment.spec.optimizer, rule, table, param_blocks, param_grads, hyper_names
    )
    check_complete(grid, hand, step)
    return grid


def _row(block: Block, i: int) -> str:
    return area(block.top + i, block.left, 1, block.cols)


def _dense(
    sheet: Sheet,
    part: str,
    source: str,
    source_symbol: str,
    shape: tuple[int, int],
    col_labels: list[str],
    row_labels: list[str],
) -> Block:
    """z = source·Wᵀ + bᵀ of one part, one array formula (MMULT; a row per sample, as torch)."""
    body = f"{fx.mmult(source, fx.transpose(f'W_{part}'))}+{fx.transpose(f'b_{part}')}"
    return sheet.computed(
        f"{part}.z",
        f"{source_symbol}·W⁽{part}⁾ᵀ + b⁽{part}⁾ᵀ   (MMULT; a row per sample, as torch)",
        "forward",
        {},
        shape,
        col_labels,
        row_labels,
        array=body,
    )


def _param_gradients(
    sheet: Sheet,
    part: str,
    g: Block,
    source: str,
    source_symbol: str,
    param_grads: dict[str, Block],
    in_labels: list[str],
) -> None:
    """∂L/∂W = (∂L/∂z)ᵀ·source and ∂L/∂b = Σ over the rows of ∂L/∂z, for one part."""
    n_out = g.cols
    rows = labels("unit", n_out)
    param_grads[f"{part}.W"] = sheet.computed(
        f"{part}.dL_dW",
        f"(∂L/∂z⁽{part}⁾)ᵀ·{source_symbol}",
        "backward",
        {},
        (n_out, len(in_labels)),
        in_labels,
        rows,
        array=fx.mmult(fx.transpose(g.range()), source),
    )
    param_grads[f"{part}.b"] = sheet.computed(
        f"{part}.dL_db",
        f"Σ over the samples of ∂L/∂z⁽{part}⁾",
        "backward",
        {(j, 0): f"SUM({area(g.top, g.left + j, g.rows, 1)})" for j in range(n_out)},
        (n_out, 1),
        ["b"],
        rows,
    )


def _head_backward(
    sheet: Sheet,
    part: str,
    g: Block,
    a_t: Block,
    param_grads: dict[str, Block],
    units: list[str],
    samples: list[str],
) -> Block:
    """A head's parameter gradients, then its share of the trunk's gradient: (∂L/∂z⁽head⁾)·W⁽head⁾."""
    _param_gradients(sheet, part, g, a_t.range(), "a⁽trunk⁾", param_grads, units)
    term = "trunk.dL1_da" if part == "head1" else "trunk.dL2_da"
    return sheet.computed(
        term,
        f"(∂L/∂z⁽{part}⁾)·W⁽{part}⁾  (head {part[-1]}'s path back to the trunk)",
        "backward",
        {},
        (g.rows, a_t.cols),
        units,
        samples,
        array=fx.mmult(g.range(), f"W_{part}"),
    )
