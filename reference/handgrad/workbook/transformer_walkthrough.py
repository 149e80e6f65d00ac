r"""The transformer walkthrough: block 1's LayerNorm LN₁ and its causal self-attention, forward and
backward, as live formulas for a slice of the step: sequence 1 of the batch (its L positions),
every head of it (each head is its own band of blocks; the traced attention weights are the mean
over heads, and ∂L/∂h₁ sums the heads, so every head is needed for a checked cell).

Inputs (plain cells, the hand side's traced values): x (the block's input, emb.x of sequence 1),
γ₁, β₁, each head's rows of in_proj_weight (W_q, W_k, W_v: d × E, d = E/heads), out_proj.weight,
ε, and the gradients arriving from the rest of the network (∂L/∂a and ∂L/∂x₁, on the Trace).

    μ_t = AVERAGE(x_t), σ²_t = DEVSQ(x_t)/E, x̂ = (x − μ)/√(σ² + ε), h₁ = γ x̂ + β      (h₁ checked)
    Q = h₁ W_qᵀ, K = h₁ W_kᵀ, V = h₁ W_vᵀ
    S_ts = Q_t·K_s / √d for s ≤ t; s > t is masked (−∞ before the softmax)
    P_ts = exp(S_ts − max_s' S_ts') / Σ_{s' ≤ t} exp(S_ts' − max)   (0 where masked)
    P̄ = mean over heads of P                                         (checked: attn.weights)
    O = P V,  a_t = Σ_heads O_t W_out[:, head]ᵀ                       (checked: a)
    ∂L/∂O = ∂L/∂a W_out[:, head], ∂L/∂P_ts = ∂L/∂O_t·V_s, ∂L/∂V = Pᵀ ∂L/∂O
    ∂L/∂S_ts = P_ts (∂L/∂P_ts − Σ_s' P_ts' ∂L/∂P_ts')    (softmax's Jacobian-vector product;
                                                          0 where masked: P_ts = 0 there)
    ∂L/∂Q = ∂L/∂S K/√d, ∂L/∂K = ∂L/∂Sᵀ Q/√d
    ∂L/∂h₁ = Σ_heads ∂L/∂Q W_q + ∂L/∂K W_k + ∂L/∂V W_v                (checked: dL_dh1)
    ∂L/∂x = ∂L/∂x₁ + (E γ⊙∂L/∂h₁ − Σ_e γ⊙∂L/∂h₁ − x̂ Σ_e γ⊙∂L/∂h₁⊙x̂)/(E √(σ² + ε))
            (the residual plus LN₁'s three-term form; checked: emb.dL_dx)

The parameter gradients sum over the whole batch: they are on the Trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from handgrad.contract.runs import TransformerRun
from handgrad.contract.trace import StepTrace
from handgrad.contract.transformer import Transformer
from handgrad.harness import Experiment
from handgrad.workbook.blocks import Block, Sheet, step_grids
from handgrad.workbook.grid import Grid
from handgrad.workbook.slice_blocks import (
    before,
    checked,
    float64_reason,
    helper,
    labels,
    scalar_input,
    section,
    start_sheet,
)

MAX_HEADS = 4  # more heads: the sheet would hold more bands than a reader follows


def transformer_unsupported_reason(experiment: Experiment) -> str | None:
    """``None`` when the transformer walkthrough can be written for this run, else why not."""
    spec = experiment.spec
    if not isinstance(spec, TransformerRun):
        return "the transformer walkthrough needs a transformer run"
    model: Transformer = spec.model
    if model.heads > MAX_HEADS:
        return (
            f"the attention walkthrough lays out every head of one sequence; {model.heads} heads are more "
            f"than {MAX_HEADS}: every term is on the Trace"
        )
    return float64_reason(experiment)


def sheet_name(step: int) -> str:
    return "Attention walkthrough" if step == 1 else f"Attention walkthrough {step}"


def transformer_walkthrough_grids(
    experiment: Experiment,
    captured: Mapping[int, tuple[StepTrace, StepTrace]],
    steps: Iterable[int] | None = None,
) -> list[Grid]:
    """One Grid per walkthrough step; ``captured[k]`` is (hand trace, torch trace) of step k."""
    return step_grids(
        experiment, captured, steps, transformer_unsupported_reason, transformer_walkthrough_grid
    )


def _row(block: Block, i: int, first: int = 0, count: int | None = None) -> str:
    count = block.cols - first if count is None else count
    return f"{block.cell(i, first)}:{block.cell(i, first + count - 1)}"


def _col(block: Block, j: int, first: int = 0, count: int | None = None) -> str:
    count = block.rows - first if count is None else count
    return f"{block.cell(first, j)}:{block.cell(first + count - 1, j)}"


def transformer_walkthrough_grid(
    experiment: Experiment, step: int, captured: Mapping[int, tuple[StepTrace, StepTrace]]
) -> Grid:
    """LN₁ and the causal attention of block 1, sequence 1, at ``step``: forward and backward."""
    model: Transformer = experiment.spec.model
    length, width, heads = model.context, model.n_embd, model.heads
    d = width // heads
    grid, sheet = start_sheet(
        sheet_name(step),
        step,
        max(width, length),
        captured,
        [
            f"Attention walkthrough of step {step}: LayerNorm LN₁ and causal self-attention of block 1",
            f"Slice: sequence 1 of the batch (its L = {length} positions), all {heads} heads of "
            f"d = E/heads = {d}. Yellow cells are inputs (the hand side's values): edit one and the "
            "blocks below recompute.",
            "The embeddings, the MLP, the other blocks, LN_f, the head, the loss, every parameter "
            "gradient (a sum over the whole batch) and the update are on the Trace.",
        ],
    )
    hand = captured[step][0]
    initial = experiment.initial_params

    def param(name: str) -> np.ndarray:
        return before(experiment, step, captured, f"{name}_next", initial[name])

    positions = labels("t", length, -1)  # t = 0 .. L−1, as torch's positions
    features = labels("e", width)
    seq = np.arange(length)[:, None] * width + np.arange(width)[None, :]  # (t, e) of sequence 1

    section(sheet, "Inputs (plain cells: edit them)")
    eps = scalar_input(sheet, "ε (eps, name eps_ln)", model.eps, "eps_ln")
    sheet.top += 1
    x = sheet.inputs("x (sequence 1: L × E, the block's input)", _seq(hand, "emb.x"), features, positions)
    gamma = sheet.inputs(
        "γ₁ (ln1.weight) before the step", param("block1.ln1.weight")[None, :], features, ["γ₁"]
    )
    beta = sheet.inputs("β₁ (ln1.bias) before the step", param("block1.ln1.bias")[None, :], features, ["β₁"])
    in_proj = param("block1.attn.in_proj_weight")
    w: dict[tuple[str, int], Block] = {}
    for k in range(heads):
        for part, offset in (("q", 0), ("k", width), ("v", 2 * width)):
            rows = in_proj[offset + k * d : offset + (k + 1) * d]
            w[(part, k)] = sheet.inputs(
                f"W_{part} of head {k + 1} (in_proj_weight rows {offset + k * d + 1}–{offset + (k + 1) * d})",
                rows,
                features,
                labels(part, d),
            )
    w_out = sheet.inputs(
        "W_out (out_proj.weight, E × E) before the step",
        param("block1.attn.out_proj.weight"),
        features,
        features,
    )
    da = sheet.inputs(
        "∂L/∂a (sequence 1, from the residual x₁ = x + a: on the Trace)",
        _seq(hand, "block1.dL_da"),
        features,
        positions,
    )
    dx1 = sheet.inputs(
        "∂L/∂x₁ (sequence 1: the residual path, on the Trace)",
        _seq(hand, "block1.dL_dx1"),
        features,
        positions,
    )
    sheet.top += 1

    cache = _helper_values(
        _seq(hand, "emb.x"),
        param("block1.ln1.weight"),
        param("block1.ln1.bias"),
        in_proj,
        param("block1.attn.out_proj.weight"),
        _seq(hand, "block1.dL_da"),
        model,
    )
    section(sheet, "Forward: LayerNorm LN₁ (over the E features of each position)")
    mu = helper(
        sheet,
        "μ = (1/E) Σ_e x",
        "forward",
        lambda i, j: f"AVERAGE({_row(x, i)})",
        (length, 1),
        ["μ"],
        positions,
        cache["mu"],
    )
    var = helper(
        sheet,
        "σ² = (1/E) Σ_e (x − μ)²  (biased)",
        "forward",
        lambda i, j: f"DEVSQ({_row(x, i)})/{width}",
        (length, 1),
        ["σ²"],
        positions,
        cache["var"],
    )
    xhat = helper(
        sheet,
        "x̂ = (x − μ)/√(σ² + ε)",
        "forward",
        lambda i, j: f"({x.cell(i, j)}-{mu.cell(i, 0)})/SQRT({var.cell(i, 0)}+{eps})",
        (length, width),
        features,
        positions,
        cache["xhat"],
    )
    h1 = checked(
        sheet,
        "block1.h1",
        "γ₁·x̂ + β₁",
        "forward",
        lambda i, j: f"{gamma.cell(0, j)}*{xhat.cell(i, j)}+{beta.cell(0, j)}",
        seq,
        features,
        positions,
    )
    sheet.top += 1

    keys = labels("s", length, -1)
    head_blocks = []
    for k in range(heads):
        section(sheet, f"Forward: head {k + 1} of {heads}")
        qkv = {}
        for part in ("q", "k", "v"):
            wp = w[(part, k)]
            qkv[part] = helper(
                sheet,
                f"{part.upper()} = h₁ W_{part}ᵀ (head {k + 1})",
                "forward",
                lambda i, j, wp=wp: f"SUMPRODUCT({_row(h1, i)},{_row(wp, j)})",
                (length, d),
                labels(part, d),
                positions,
                cache[(part, k)],
            )
        q, kk, v = qkv["q"], qkv["k"], qkv["v"]
        scores = _causal(
            sheet,
            f"S = Q·Kᵀ/√d, d = {d}; s > t masked (−∞: no future position)",
            "forward",
            lambda i, j, q=q, kk=kk: f"SUMPRODUCT({_row(q, i)},{_row(kk, j)})/SQRT({d})",
            length,
            keys,
            positions,
            "−∞",
            cache[("s", k)],
        )
        p = _causal(
            sheet,
            "P = softmax over s ≤ t of S: exp(S − max)/Σ exp(S − max); 0 where masked",
            "forward",
            lambda i, j, scores=scores: (
                f"EXP({scores.cell(i, j)}-MAX({_row(scores, i, 0, i + 1)}))"
                f"/SUMPRODUCT(EXP({_row(scores, i, 0, i + 1)}-MAX({_row(scores, i, 0, i + 1)})))"
            ),
            length,
            keys,
            positions,
            0.0,
            cache[("p", k)],
        )
        o = helper(
            sheet,
            f"O = P·V (head {k + 1})",
            "forward",
            lambda i, j, p=p, v=v: _pv(p, v, i, j),
            (length, d),
            labels("o", d),
            positions,
            cache[("o", k)],
        )
        head_blocks.append((q, kk, v, p, o))
    checked(
        sheet,
        "block1.attn.weights",
        "mean over heads of P (what MultiheadAttention returns)",
        "forward",
        lambda i, j: "(" + "+".join(hb[3].cell(i, j) for hb in head_blocks) + f")/{heads}",
        np.arange(length)[:, None] * length + np.arange(length)[None, :],
        keys,
        positions,
    )
    checked(
        sheet,
        "block1.a",
        "Σ_heads O·W_out[:, head]ᵀ  (out_proj, no bias)",
        "forward",
        lambda i, j: "+".join(
            f"SUMPRODUCT({_row(hb[4], i)},{_row(w_out, j, k * d, d)})" for k, hb in enumerate(head_blocks)
        ),
        seq,
        features,
        positions,
    )
    sheet.top += 1

    dh_parts: list[tuple[Block, Block, Block]] = []
    for k, (q, kk, v, p, _) in enumerate(head_blocks):
        section(sheet, f"Backward: head {k + 1} of {heads}")
        do = helper(
            sheet,
            f"∂L/∂O = ∂L/∂a·W_out[:, head {k + 1}]",
            "backward",
            lambda i, j, k=k: _dot_row_col(_row(da, i), _col(w_out, k * d + j)),
            (length, d),
            labels("o", d),
            positions,
            cache[("do", k)],
        )
        dp = _causal(
            sheet,
            "∂L/∂P = ∂L/∂O·Vᵀ",
            "backward",
            lambda i, j, do=do, v=v: f"SUMPRODUCT({_row(do, i)},{_row(v, j)})",
            length,
            keys,
            positions,
            0.0,
            cache[("dp", k)],
        )
        ds = _causal(
            sheet,
            "∂L/∂S = P ⊙ (∂L/∂P − Σ_s P ∂L/∂P)  (softmax's JVP; masked: 0, no gradient)",
            "backward",
            lambda i, j, p=p, dp=dp: (
                f"{p.cell(i, j)}*({dp.cell(i, j)}-SUMPRODUCT({_row(p, i, 0, i + 1)},{_row(dp, i, 0, i + 1)}))"
            ),
            length,
            keys,
            positions,
            0.0,
            cache[("ds", k)],
        )
        dq = helper(
            sheet,
            "∂L/∂Q = ∂L/∂S·K/√d",
            "backward",
            lambda i, j, ds=ds, kk=kk: (
                _dot_row_col(_row(ds, i, 0, i + 1), _col(kk, j, 0, i + 1)) + f"/SQRT({d})"
            ),
            (length, d),
            labels("q", d),
            positions,
            cache[("dq", k)],
        )
        dk = helper(
            sheet,
            "∂L/∂K = ∂L/∂Sᵀ·Q/√d",
            "backward",
            lambda i, j, ds=ds, q=q: (
                f"SUMPRODUCT({_col(ds, i, i, length - i)},{_col(q, j, i, length - i)})/SQRT({d})"
            ),
            (length, d),
            labels("k", d),
            positions,
            cache[("dk", k)],
        )
        dv = helper(
            sheet,
            "∂L/∂V = Pᵀ·∂L/∂O",
            "backward",
            lambda i, j, p=p, do=do: f"SUMPRODUCT({_col(p, i, i, length - i)},{_col(do, j, i, length - i)})",
            (length, d),
            labels("v", d),
            positions,
            cache[("dv", k)],
        )
        dh_parts.append((dq, dk, dv))
    section(sheet, "Backward: into h₁ and through LN₁")
    dh1 = checked(
        sheet,
        "block1.dL_dh1",
        "Σ_heads ∂L/∂Q·W_q + ∂L/∂K·W_k + ∂L/∂V·W_v",
        "backward",
        lambda i, j: "+".join(
            _dot_row_col(_row(g, i), _col(w[(part, k)], j))
            for k, parts in enumerate(dh_parts)
            for part, g in zip(("q", "k", "v"), parts, strict=True)
        ),
        seq,
        features,
        positions,
    )
    checked(
        sheet,
        "emb.dL_dx",
        "∂L/∂x₁ + (E·γ₁⊙∂L/∂h₁ − Σ_e γ₁⊙∂L/∂h₁ − x̂·Σ_e γ₁⊙∂L/∂h₁⊙x̂)/(E·√(σ² + ε))  (residual + LN₁)",
        "backward",
        lambda i, j: (
            f"{dx1.cell(i, j)}+({width}*{gamma.cell(0, j)}*{dh1.cell(i, j)}"
            f"-SUMPRODUCT({_row(gamma, 0)},{_row(dh1, i)})"
            f"-{xhat.cell(i, j)}*SUMPRODUCT({_row(gamma, 0)},{_row(dh1, i)},{_row(xhat, i)}))"
            f"/({width}*SQRT({var.cell(i, 0)}+{eps}))"
        ),
        seq,
        features,
        positions,
    )
    return grid


def _helper_values(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    in_proj: np.ndarray,
    w_out: np.ndarray,
    da: np.ndarray,
    model: Transformer,
) -> dict[object, np.ndarray]:
    """The helper blocks' cached values: the sheet's formulas in NumPy, from the same input cells
    (the module docstring's equations; masked entries as the sheet shows them: 0)."""
    width, heads = model.n_embd, model.heads
    d = width // heads
    mu = x.mean(axis=1, keepdims=True)  # L,1
    var = np.square(x - mu).mean(axis=1, keepdims=True)  # L,1
    xhat = (x - mu) / np.sqrt(var + model.eps)  # L,E
    h1 = gamma * xhat + beta  # L,E
    future = np.triu(np.ones((x.shape[0], x.shape[0]), dtype=bool), 1)  # s > t
    values: dict[object, np.ndarray] = {"mu": mu, "var": var, "xhat": xhat}
    for k in range(heads):
        q, kk, v = (h1 @ in_proj[offset + k * d : offset + (k + 1) * d].T for offset in (0, width, 2 * width))
        scores = np.where(future, 0.0, q @ kk.T / np.sqrt(d))  # L,L
        e = np.where(
            future, 0.0, np.exp(scores - np.where(future, -np.inf, scores).max(axis=1, keepdims=True))
        )
        p = e / e.sum(axis=1, keepdims=True)
        do = da @ w_out[:, k * d : (k + 1) * d]  # L,d
        dp = np.where(future, 0.0, do @ v.T)
        ds = p * (dp - (p * dp).sum(axis=1, keepdims=True))
        values.update(
            {
                ("q", k): q,
                ("k", k): kk,
                ("v", k): v,
                ("s", k): scores,
                ("p", k): p,
                ("o", k): p @ v,
                ("do", k): do,
                ("dp", k): dp,
                ("ds", k): ds,
                ("dq", k): ds @ kk / np.sqrt(d),
                ("dk", k): ds.T @ q / np.sqrt(d),
                ("dv", k): p.T @ do,
            }
        )
    return values


def _seq(hand: StepTrace, term: str) -> np.ndarray:
    """Sequence 1 of an (N, L, E) term."""
    return np.asarray(hand.value(term), dtype=float)[0]


def _dot_row_col(row: str, col: str) -> str:
    """Σ row·col of a 1 × n row and an n × 1 column."""
    return f"SUMPRODUCT({row},TRANSPOSE({col}))"


def _pv(p: Block, v: Block, i: int, j: int) -> str:
    """O_tj = Σ_{s ≤ t} P_ts V_sj (the masked P_ts are 0)."""
    return _dot_row_col(_row(p, i, 0, i + 1), _col(v, j, 0, i + 1))


def _causal(
    sheet: Sheet,
    title: str,
    phase: str,
    cell,  # noqa: ANN001 (a Cells)
    length: int,
    col_labels: list[str],
    row_labels: list[str],
    masked: object,
    values: np.ndarray,
) -> Block:
    """An L × L block with formulas where s ≤ t and ``masked`` (a text or a number) above the
    diagonal."""
    block = helper(
        sheet,
        title,
        phase,
        lambda i, j: cell(i, j) if j <= i else "0",
        (length, length),
        col_labels,
        row_labels,
        values,
    )
    for i in range(length):
        for j in range(i + 1, length):
            if isinstance(masked, str):
                sheet.grid.text(block.top + i, block.left + j, masked, "note")
            else:
                sheet.grid.set(block.top + i, block.left + j, masked, "note")
    return block
