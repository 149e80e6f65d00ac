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
  pre-activations a = W_ih x_t + b_ih + W_hh h_{t−1} + b_hh (the GRU's n block with
  r ⊙ (W_hn h + b_hn)), the gates, c_t, h_t (a row past its length keeps its state:
  IF(m, new, old)); many-to-many: z_t, ŷ_t, y_t and the per-element loss ℓ_t (0 past the
  length);
- the loss band right of band T: many-to-one z = W_y h_n + b_y, ŷ, y, ℓ; L and the count n of
  the elements in the mean (real steps only);
- the backward pass runs right to left through the same bands, below the forward: ∂L/∂ŷ_t,
  ∂L/∂z_t, the head's ∂L/∂h_t, then per layer (top first) ∂L/∂h_t (what arrives from above plus
  what is carried back from band t+1), ∂L/∂c_t, ∂L/∂z of every gate, the gradient carried on
  to band t − 1 (in band 1 it is ∂L/∂h₀), and ∂L/∂x_t;
- below the bands: the parameter gradients (sums over the bands), clipping (when the run clips),
  the updated parameters and the optimizer's scalars.

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

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from handgrad.contract import names as naming
from handgrad.contract.recurrent import HEAD, RecurrentModel, param_table
from handgrad.contract.runs import RecurrentRun
from handgrad.contract.spec import SpecError
from handgrad.contract.trace import StepTrace
from handgrad.hand.recurrent_model import HandRecurrent
from handgrad.harness import Experiment
from handgrad.workbook import formulas as fx
from handgrad.workbook.grid import Grid, address, area
from handgrad.workbook.loss_formulas import ElementLoss

LEFT = 2  # everything starts in column B; column A holds titles and row labels
LIMITS = {"hidden": 4, "length": 8, "batch": 8, "inputs": 4, "outputs": 4, "layers": 2}
LEGEND = ("input", "forward", "loss", "backward", "update", "state", "torch", "delta")
LEGEND_TEXT = {
    "input": "input (edit me)",
    "forward": "forward",
    "loss": "loss",
    "backward": "backward",
    "update": "update",
    "state": "optimizer scalar",
    "torch": "torch's value",
    "delta": "|Δ| by formula",
}
GATE_FUNCTIONS = {"lstm": ("σ", "σ", "tanh", "σ"), "gru": ("σ", "σ", "tanh")}


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
    optimizer = spec.optimizer
    clip = optimizer.clip
    if clip is not None and clip.max_norm is not None and float(clip.norm_type) != 2.0:
        return f"live clipping by norm is written for the 2-norm only (this run: norm_type {clip.norm_type})"
    try:
        if spec.loss.kind not in ("mse", "bce") or spec.loss.reduction == "none":
            loss = spec.loss
            raise SpecError("loss", f"no live formulas for loss {loss.kind!r} (reduction {loss.reduction})")
        fx.update_rule(dataclasses.replace(optimizer, clip=None))
    except SpecError as error:
        return error.message
    return None


def default_steps(captured: Mapping[int, object]) -> list[int]:
    """Step 1, and every captured k whose k − 1 is captured too (its weights come from there)."""
    return [k for k in sorted(captured) if k == 1 or k - 1 in captured]


def sheet_name(step: int) -> str:
    return "Walkthrough" if step == 1 else f"Walkthrough {step}"


def recurrent_walkthrough_grids(
    experiment: Experiment,
    captured: Mapping[int, tuple[StepTrace, StepTrace]],
    steps: Iterable[int] | None = None,
) -> list[Grid]:
    """One Grid per walkthrough step ("Walkthrough", "Walkthrough 50", ...); ``captured[k]`` is
    (hand trace, torch trace) of step k; ``steps`` defaults to :func:`default_steps`."""
    reason = recurrent_unsupported_reason(experiment)
    if reason is not None:
        raise SpecError("workbook", reason)
    chosen = sorted(set(steps)) if steps is not None else default_steps(captured)
    return [_Builder(experiment, step, captured).build() for step in chosen]


def replay_hand(experiment: Experiment, steps: int) -> StepTrace | None:
    """The hand trace of step ``steps`` again, from the run's initial weights (a fresh side)."""
    spec = experiment.spec
    hand = HandRecurrent(
        spec.model,
        spec.loss,
        spec.optimizer,
        {name: np.array(value) for name, value in experiment.initial_params.items()},
        spec.data,
        spec.batches,
        h0=spec.h0,
        c0=spec.c0,
    )
    trace = None
    for step in range(1, steps + 1):
        trace = hand.step(step)
    return trace


def params_before(
    experiment: Experiment, step: int, captured: Mapping[int, tuple[StepTrace, StepTrace]]
) -> dict[str, np.ndarray]:
    """The hand side's parameters before ``step``: the initial ones, or step − 1's ``*_next``."""
    names = [name for name, _, _ in param_table(experiment.spec.model)]
    if step == 1:
        return {name: np.asarray(experiment.initial_params[name], dtype=float) for name in names}
    previous = captured[step - 1][0] if step - 1 in captured else replay_hand(experiment, step - 1)
    assert previous is not None
    return {name: np.asarray(previous.value(f"{name}_next"), dtype=float) for name in names}


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


@dataclass(frozen=True)
class Block:
    top: int
    left: int
    rows: int
    cols: int

    def cell(self, i: int, j: int, absolute: bool = False) -> str:
        return address(self.top + i, self.left + j, absolute=absolute)

    def row(self, i: int, first: int = 0, count: int | None = None) -> str:
        width = self.cols - first if count is None else count
        return area(self.top + i, self.left + first, 1, width)

    def column(self, j: int) -> str:
        return area(self.top, self.left + j, self.rows, 1)

    def range(self) -> str:
        return area(self.top, self.left, self.rows, self.cols)


@dataclass(frozen=True)
class Slot:
    """A kind of block in a band: rows of hand cells, and (for a term) torch's and |Δ| rows."""

    key: tuple
    title: str
    cols: int
    phase: str
    torch: bool

    def height(self, n: int) -> int:
        return 1 + n + (2 * (n + 1) if self.torch else 0) + 1


def _labels(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{j + 1}" for j in range(count)]


def _sum(parts: list[str]) -> str:
    parts = [p for p in parts if p and p != "0"]
    return "+".join(parts) if parts else "0"


class _Builder:
    """Lays out one walkthrough Grid (step ``step``)."""

    def __init__(
        self, experiment: Experiment, step: int, captured: Mapping[int, tuple[StepTrace, StepTrace]]
    ) -> None:
        if step not in captured:
            raise SpecError(
                "walkthrough", f"step {step} was not captured (the run has {experiment.steps} steps)"
            )
        spec = experiment.spec
        self.experiment = experiment
        self.step = step
        self.hand, self.torch = captured[step]
        self.model: RecurrentModel = spec.model
        self.loss = spec.loss
        self.optimizer = spec.optimizer
        self.clip = self.optimizer.clip
        self.rule = fx.update_rule(dataclasses.replace(self.optimizer, clip=None))
        data = spec.data
        rows = np.asarray(spec.batches[step - 1])
        self.rows = rows
        self.x = data.x[rows]  # N,T,I
        self.y = data.y[rows]  # N,O or N,T,O
        self.lengths = data.lengths[rows]  # N
        self.N, self.T = self.x.shape[0], self.x.shape[1]
        self.active = np.arange(self.T)[:, None] < self.lengths[None, :]  # T,N
        m = self.model
        self.L, self.H, self.I, self.O = m.num_layers, m.hidden_size, m.input_size, m.output_size
        self.G = m.gates
        self.cell_kind = m.cell
        self.lstm, self.gru = m.cell == "lstm", m.cell == "gru"
        self.many = m.head == "many-to-many"
        self.initial_given = spec.h0 is not None
        shape = (self.L, self.N, self.H)
        self.h0 = spec.h0[:, rows] if self.initial_given else np.zeros(shape)
        self.c0 = spec.c0[:, rows] if (self.initial_given and self.lstm) else np.zeros(shape)
        self.params = params_before(experiment, step, captured)
        self.symbols = {name: symbol for name, _, symbol in param_table(m)}
        self.grid = Grid(sheet_name(step))
        self.row_labels = [f"seq {int(r) + 1}" for r in rows]
        self.band_width = max(self.G * self.H, self.I, self.H, self.O, 3)

    # -- small helpers --------------------------------------------------------------------------

    def band_left(self, t: int) -> int:
        """Band t = 0 (initial state), 1..T, and T + 1 (the loss band)."""
        return LEFT + t * (self.band_width + 1)

    def prefix(self, layer: int) -> str:
        return self.model.layer_name(layer)

    def set(self, row: int, col: int, body: str, style: str, check: tuple[str, int] | None = None) -> None:
        self.grid.set(row, col, fx.formula(body), style)
        if check is not None:
            self.grid.check(row, col, self.step, check[0], check[1])

    def term_value(self, trace: StepTrace | None, name: str) -> np.ndarray | None:
        if trace is None or name not in trace:
            return None
        return np.asarray(trace.value(name), dtype=float)

    def torch_source(self, name: str) -> str:
        return self.torch[name].source if self.torch is not None and name in self.torch else "—"

    # -- layout -------------------------------------------------------------------------------------

    def band_slots(self) -> tuple[list[Slot], list[Slot]]:
        """The forward and backward blocks of a time band, top to bottom."""
        H, G, O = self.H, self.G, self.O
        fwd: list[Slot] = [
            Slot(
                ("mask",),
                "m_t = [t ≤ length]: 1 while the sequence runs, 0 past its end",
                1,
                "forward",
                False,
            ),
            Slot(("x",), "x_t: the step's inputs (edit me)", self.I, "input", False),
        ]
        for layer in range(self.L):
            l1 = layer + 1
            inp = "x_t" if layer == 0 else f"h⁽{layer}⁾_t"
            if self.gru:
                fwd.append(
                    Slot(
                        ("hhn", layer),
                        f"layer {l1}: W_hn h_(t−1) + b_hn (the GRU's reset acts on this)",
                        H,
                        "forward",
                        False,
                    )
                )
                pre = (
                    f"layer {l1}: a_r, a_z = W_i· {inp} + b_i· + W_h· h_(t−1) + b_h·;  "
                    f"a_n = W_in {inp} + b_in + r ⊙ (W_hn h + b_hn)"
                )
            else:
                pre = f"layer {l1}: a = W_ih {inp} + b_ih + W_hh h_(t−1) + b_hh" + (
                    " (blocks i | f | g | o)" if self.lstm else ""
                )
            fwd.append(Slot(("pre", layer), pre, G * H, "forward", False))
            if self.lstm:
                fwd.append(
                    Slot(("gates", layer), f"layer {l1}: i, f, o = σ(a), g = tanh(a)", G * H, "forward", True)
                )
                fwd.append(
                    Slot(
                        ("c", layer),
                        f"layer {l1}: c_t = f ⊙ c_(t−1) + i ⊙ g  (c_(t−1) past the end)",
                        H,
                        "forward",
                        True,
                    )
                )
                fwd.append(
                    Slot(
                        ("h", layer),
                        f"layer {l1}: h_t = o ⊙ tanh(c_t)  (h_(t−1) past the end)",
                        H,
                        "forward",
                        True,
                    )
                )
            elif self.gru:
                fwd.append(
                    Slot(("gates", layer), f"layer {l1}: r, z = σ(a), n = tanh(a_n)", G * H, "forward", True)
                )
                fwd.append(
                    Slot(
                        ("h", layer),
                        f"layer {l1}: h_t = (1 − z) ⊙ n + z ⊙ h_(t−1)  (h_(t−1) past the end)",
                        H,
                        "forward",
                        True,
                    )
                )
            else:
                act = "relu" if self.cell_kind == "rnn_relu" else "tanh"
                fwd.append(
                    Slot(
                        ("h", layer),
                        f"layer {l1}: h_t = {act}(a)  (h_(t−1) past the end)",
                        H,
                        "forward",
                        True,
                    )
                )
        if self.many:
            act = self.model.output_activation
            fwd += [
                Slot(("z",), "head: z_t = W_y h_t + b_y", O, "forward", True),
                Slot(("yhat",), f"head: ŷ_t = {act}(z_t)", O, "forward", True),
                Slot(("y",), "y_t: the step's targets (edit me)", O, "input", False),
                Slot(
                    ("ell",),
                    "ℓ_t: the loss of each element (0 past the end: not in the loss)",
                    O,
                    "loss",
                    False,
                ),
            ]
        bwd: list[Slot] = []
        if self.many:
            bwd += [
                Slot(("dyhat",), "∂L/∂ŷ_t (0 past the end)", O, "backward", True),
                Slot(("dz",), "∂L/∂z_t = ∂L/∂ŷ_t ⊙ f′(z_t)", O, "backward", True),
                Slot(("dxhead",), "∂L/∂h_t from the head = ∂L/∂z_t · W_y", H, "backward", True),
            ]
        for layer in reversed(range(self.L)):
            l1 = layer + 1
            above = "the head" if layer == self.L - 1 else f"layer {l1 + 1}'s ∂L/∂x_t"
            bwd.append(
                Slot(
                    ("dh", layer),
                    f"layer {l1}: ∂L/∂h_t = from {above} + carried from t+1",
                    H,
                    "backward",
                    True,
                )
            )
            if self.lstm:
                bwd.append(
                    Slot(
                        ("dc", layer),
                        f"layer {l1}: ∂L/∂c_t = carried + ∂L/∂h_t ⊙ o ⊙ (1 − tanh²c_t)",
                        H,
                        "backward",
                        True,
                    )
                )
                eq = (
                    "∂L/∂z_i = ∂L/∂c ⊙ g ⊙ i(1−i), z_f: ∂L/∂c ⊙ c_(t−1) ⊙ f(1−f), "
                    "a_g: ∂L/∂c ⊙ i ⊙ (1−g²), a_o: ∂L/∂h ⊙ tanh c ⊙ o(1−o)"
                )
            elif self.gru:
                eq = (
                    "∂L/∂z_n = ∂L/∂h ⊙ (1−z)(1−n²), z_z: ∂L/∂h ⊙ (h_(t−1) − n) ⊙ z(1−z), "
                    "z_r: ∂L/∂z_n ⊙ (W_hn h + b_hn) ⊙ r(1−r)"
                )
            elif self.cell_kind == "rnn_relu":
                eq = "∂L/∂z = ∂L/∂h ⊙ [z > 0]  (relu′(0) = 0)"
            else:
                eq = "∂L/∂z = ∂L/∂h ⊙ (1 − h²)"
            bwd.append(
                Slot(("da", layer), f"layer {l1}: {eq}  (0 past the end)", G * self.H, "backward", True)
            )
            if self.gru:
                bwd.append(
                    Slot(
                        ("dghn", layer),
                        f"layer {l1}: ∂L/∂(W_hn h + b_hn) = ∂L/∂z_n ⊙ r",
                        H,
                        "backward",
                        False,
                    )
                )
            carried = "∂L/∂h_t ⊙ z + " if self.gru else ""
            bwd.append(
                Slot(
                    ("carry_h", layer),
                    f"layer {l1}: carried to t−1: {carried}∂L/∂z · W_hh"
                    "  (∂L/∂h_t past the end; in band 1: ∂L/∂h₀)",
                    H,
                    "backward",
                    True,
                )
            )
            if self.lstm:
                bwd.append(
                    Slot(
                        ("carry_c", layer),
                        f"layer {l1}: carried to t−1: ∂L/∂c_t ⊙ f  (in band 1: ∂L/∂c₀)",
                        H,
                        "backward",
                        True,
                    )
                )
            inp = "x_t" if layer == 0 else f"h⁽{layer}⁾_t"
            bwd.append(
                Slot(
                    ("dx", layer),
                    f"layer {l1}: ∂L/∂{inp} = ∂L/∂z · W_ih",
                    self.I if layer == 0 else H,
                    "backward",
                    True,
                )
            )
        return fwd, bwd

    def loss_slots(self) -> tuple[list[Slot], list[Slot]]:
        """The loss band (right of band T)."""
        O, H = self.O, self.H
        act = self.model.output_activation
        fwd: list[Slot] = []
        bwd: list[Slot] = []
        if not self.many:
            fwd += [
                Slot(
                    ("z",),
                    "head: z = W_y h_n + b_y  (h_n: each sequence's own last state)",
                    O,
                    "forward",
                    True,
                ),
                Slot(("yhat",), f"head: ŷ = {act}(z)", O, "forward", True),
                Slot(("y",), "y: the targets (edit me)", O, "input", False),
                Slot(("ell",), "ℓ: the loss of each element", O, "loss", False),
            ]
            bwd += [
                Slot(("dyhat",), "∂L/∂ŷ", O, "backward", True),
                Slot(("dz",), "∂L/∂z = ∂L/∂ŷ ⊙ f′(z)", O, "backward", True),
                Slot(
                    ("dhn",),
                    "∂L/∂h_n = ∂L/∂z · W_y (into the top layer at each sequence's last step)",
                    H,
                    "backward",
                    True,
                ),
            ]
        return fwd, bwd

    def place(self, slots: list[Slot], top: int) -> tuple[dict[tuple, int], int]:
        offsets: dict[tuple, int] = {}
        row = top
        for slot in slots:
            offsets[slot.key] = row
            row += slot.height(self.N)
        return offsets, row

    # -- build --------------------------------------------------------------------------------------

    def build(self) -> Grid:
        grid = self.grid
        m = self.model
        grid.widths[1] = 46
        grid.freeze = "B1"
        loss_text = f"{self.loss.kind} ({self.loss.reduction}{', ½' if self.loss.half else ''})"
        clip_text = "no clipping"
        if self.clip is not None:
            clip_text = (
                f"clip by norm {fx.number(self.clip.max_norm)}"
                if self.clip.max_norm is not None
                else f"clip by value {fx.number(self.clip.value)}"
            )
        grid.text(1, 1, f"Walkthrough of step {self.step}: {m.cell} through time, as live formulas", "title")
        grid.text(
            2,
            1,
            "Yellow cells are inputs: edit a weight, η, an input, a target or a length and every block "
            "recomputes. One column band per time step (t = 0 holds h₀); forward top to bottom, the "
            "backward pass below it, read right to left. Under each block: torch's values and |Δ|.",
            "note",
        )
        grid.text(
            3,
            1,
            f"{m.cell}, {m.num_layers} layer(s), input {self.I}, hidden {self.H}, {m.head} head of {self.O} "
            f"({m.output_activation}), loss {loss_text}, {self.optimizer.kind}, {clip_text}; "
            f"batch of {self.N} sequences (rows), lengths {self.lengths.tolist()} of padded length {self.T}; "
            f"weights (out × in) and gate blocks stacked as torch",
            "note",
        )
        grid.text(4, 1, "Legend", "header")
        for j, key in enumerate(LEGEND):
            grid.text(4, LEFT + j, LEGEND_TEXT[key], key)
        top = self.inputs(6)
        self.bands(top + 1)
        return grid

    # -- inputs -------------------------------------------------------------------------------------

    def input_block(self, top: int, left: int, values: np.ndarray, cols: list[str], title: str) -> Block:
        values = np.asarray(values, dtype=float)
        values = values.reshape(-1, 1) if values.ndim == 1 else values
        self.grid.text(top, left, title, "header")
        for j, label in enumerate(cols):
            self.grid.text(top + 1, left + j, label, "header")
        block = Block(top + 2, left, values.shape[0], values.shape[1])
        self.grid.block(block.top, block.left, values, "input")
        return block

    def inputs(self, top: int) -> int:
        grid = self.grid
        grid.text(top, 1, "Inputs (plain cells: edit them)", "title")
        top += 1
        self.hyper: dict[str, str] = {}
        for hyper in self.rule.hyper(self.optimizer):
            grid.text(top, 1, f"{hyper.symbol} ({hyper.key}, name {hyper.name})", "header")
            grid.set(top, LEFT, hyper.value, "input")
            grid.name(hyper.name, top, LEFT)
            self.hyper[hyper.key] = hyper.name
            top += 1
        self.clip_ref = None
        if self.clip is not None:
            value = self.clip.max_norm if self.clip.max_norm is not None else self.clip.value
            name = "max_norm" if self.clip.max_norm is not None else "clip_value"
            grid.text(top, 1, f"clip threshold ({name})", "header")
            grid.set(top, LEFT, float(value), "input")
            grid.name(name, top, LEFT)
            self.clip_ref = name
            top += 1
        top += 1
        grid.text(top, 1, "lengths of the step's sequences (1..T)", "header")
        grid.text(top, LEFT, "length", "header")
        self.len_block = Block(top + 1, LEFT, self.N, 1)
        for n in range(self.N):
            grid.text(top + 1 + n, 1, self.row_labels[n], "header")
            grid.set(top + 1 + n, LEFT, int(self.lengths[n]), "input")
        top += self.N + 2

        self.pblock: dict[str, Block] = {}
        self.param_rows: dict[str, list[str]] = {}  # layer -> the row labels of its parameter blocks
        G, H = self.G, self.H
        gate_names = naming.GATES[self.cell_kind] if self.G > 1 else ("h",)
        gate_rows = [f"{g}{u + 1}" for g in gate_names for u in range(H)]
        when = "initial" if self.step == 1 else f"after step {self.step - 1}"
        for layer in range(self.L):
            prefix = self.prefix(layer)
            n_in = self.I if layer == 0 else H
            grid.text(
                top, 1, f"layer {layer + 1} ({prefix}) parameters, {when}: rows are gate units", "subtitle"
            )
            self.param_rows[prefix] = gate_rows
            for n, label in enumerate(gate_rows):
                grid.text(top + 2 + n, 1, label, "header")
            left = LEFT
            for short, cols, labels in (
                ("W_ih", n_in, _labels("in", n_in)),
                ("W_hh", H, _labels("h", H)),
                ("b_ih", 1, ["b_ih"]),
                ("b_hh", 1, ["b_hh"]),
            ):
                name = f"{prefix}.{short}"
                block = self.input_block(top, left, self.params[name], labels, self.symbols[name])
                grid.name(f"{short}_{layer + 1}", block.top, block.left, block.rows, block.cols)
                self.pblock[name] = block
                left += cols + 1
            top += G * H + 3
        grid.text(top, 1, f"head ({HEAD}) parameters, {when}: rows are outputs", "subtitle")
        self.param_rows[HEAD] = [f"out{o + 1}" for o in range(self.O)]
        for o, label in enumerate(self.param_rows[HEAD]):
            grid.text(top + 2 + o, 1, label, "header")
        block = self.input_block(top, LEFT, self.params[f"{HEAD}.W"], _labels("h", H), "W_y")
        grid.name("W_y", block.top, block.left, block.rows, block.cols)
        self.pblock[f"{HEAD}.W"] = block
        block = self.input_block(top, LEFT + H + 1, self.params[f"{HEAD}.b"], ["b_y"], "b_y")
        grid.name("b_y", block.top, block.left, block.rows, block.cols)
        self.pblock[f"{HEAD}.b"] = block
        return top + self.O + 3

    # -- bands --------------------------------------------------------------------------------------

    def bands(self, top: int) -> None:
        grid, T = self.grid, self.T
        grid.text(top, 1, "Forward: one band per time step →", "title")
        for t in range(T + 2):
            label = "t = 0 (initial state)" if t == 0 else ("loss" if t == T + 1 else f"t = {t}")
            grid.text(top, self.band_left(t), label, "title")
        top += 1
        fwd, bwd = self.band_slots()
        lfwd, lbwd = self.loss_slots()
        # the loss band's own blocks (many-to-one: z, ŷ, y, ℓ; ∂L/∂ŷ, ∂L/∂z, ∂L/∂h_n) get rows of
        # their own: column A labels one row for every band, so no two kinds of block share a row
        self.fwd_at, fwd_end = self.place(fwd, top)
        self.lfwd_at, lfwd_end = self.place(lfwd, fwd_end)
        loss_top = max(fwd_end, lfwd_end)
        self.loss_row = loss_top  # L and n, in the loss band
        back_top = loss_top + 6
        grid.text(back_top - 1, 1, "Backward: read right to left ←", "title")
        self.lbwd_at, lbwd_end = self.place(lbwd, back_top)
        self.bwd_at, bwd_end = self.place(bwd, lbwd_end)
        self.slots = {s.key: s for s in fwd + bwd}
        self.lslots = {s.key: s for s in lfwd + lbwd}
        for slot in fwd + bwd:
            self.column_a(slot, {**self.fwd_at, **self.bwd_at}[slot.key])
        for slot in lfwd + lbwd:
            at = {**self.lfwd_at, **self.lbwd_at}[slot.key]
            if slot.key not in self.slots:
                self.column_a(slot, at)

        self.b: dict[tuple, Block] = {}  # (slot key, t) -> hand block
        for t in range(T + 2):
            left = self.band_left(t)
            for key, row in {**self.fwd_at, **self.bwd_at}.items():
                if 1 <= t <= T or (t == 0 and key[0] in ("h", "c")):
                    self.b[(key, t)] = Block(row + 1, left, self.N, self.slots[key].cols)
            if t == T + 1:
                for key, row in {**self.lfwd_at, **self.lbwd_at}.items():
                    self.b[(key, t)] = Block(row + 1, left, self.N, self.lslots[key].cols)
        for t in range(T + 2):
            for col in range(self.band_left(t), self.band_left(t) + self.band_width):
                grid.widths[col] = 11

        self.initial_band()
        for t in range(1, T + 1):
            self.forward_band(t)
        self.loss_band()
        for t in range(T, 0, -1):
            self.backward_band(t)
        end = max(bwd_end, lbwd_end) + 1
        self.parameter_section(end)

    def column_a(self, slot: Slot, row: int) -> None:
        grid = self.grid
        grid.text(row, 1, slot.title, slot.phase if slot.phase != "input" else "header")
        for n in range(self.N):
            grid.text(row + 1 + n, 1, self.row_labels[n], "header")
        if slot.torch:
            grid.text(row + 1 + self.N, 1, "torch's values (reference named in the band)", "torch")
            grid.text(row + 2 + 2 * self.N, 1, "|Δ| = |hand − torch|", "delta")

    def col_labels(self, key: tuple) -> list[str]:
        kind = key[0]
        H = self.H
        if kind in ("pre", "gates", "da"):
            names = naming.GATES[self.cell_kind] if self.G > 1 else ("a",)
            return [f"{g}{u + 1}" for g in names for u in range(H)]
        if kind == "x":
            return _labels("x", self.I)
        if kind in ("z", "yhat", "y", "ell", "dyhat", "dz"):
            return _labels("o", self.O)
        if kind == "mask":
            return ["m"]
        if kind == "dx" and key[1] == 0:
            return _labels("x", self.I)
        return _labels("u", H)

    def header(self, key: tuple, t: int) -> Block:
        """The block of (key, band t), its column labels written on its title row."""
        block = self.b[(key, t)]
        for j, label in enumerate(self.col_labels(key)):
            self.grid.text(block.top - 1, block.left + j, label, "header")
        return block

    def step_term(
        self,
        key: tuple,
        t: int,
        name: str,
        cells: dict[tuple[int, int], str],
        cols: tuple[int, int],
        phase: str,
        *,
        all_rows_term: str | None = None,
    ) -> None:
        """Write the formulas of block (key, t) columns [c0, c1) and check the active rows against
        the per-step term ``name`` (rows active at t, in batch order); ``all_rows_term`` checks the
        inactive rows against a whole-layer term instead (h_n, c_n)."""
        block = self.b[(key, t)]
        c0, c1 = cols
        active = np.flatnonzero(self.active[t - 1]) if t >= 1 else np.arange(self.N)
        position = {int(n): p for p, n in enumerate(active)}
        width = c1 - c0
        for n in range(self.N):
            for j in range(c0, c1):
                check = None
                if n in position:
                    check = (name, position[n] * width + (j - c0))
                elif all_rows_term is not None:
                    check = (all_rows_term, n * width + (j - c0))
                self.set(block.top + n, block.left + j, cells[(n, j)], phase, check)
        torch_values = self.term_value(self.torch, name)
        if torch_values is not None:
            values = np.asarray(torch_values).reshape(len(active), -1)
            self.torch_cols(key, t, values, list(active), c0, self.torch_source(name))

    def torch_cols(
        self, key: tuple, t: int, values: np.ndarray, rows: list[int], c0: int, source: str
    ) -> None:
        block = self.b[(key, t)]
        t_top = block.top + self.N + 1
        d_top = t_top + self.N + 1
        if c0 == 0:
            self.grid.text(t_top - 1, block.left, source, "torch")
        for p, n in enumerate(rows):
            for j in range(values.shape[1]):
                col = block.left + c0 + j
                self.grid.set(t_top + n, col, float(values[p, j]), "torch")
                body = fx.absolute_difference(address(block.top + n, col), address(t_top + n, col))
                self.grid.set(d_top + n, col, fx.formula(body), "delta")

    # -- forward ------------------------------------------------------------------------------------

    def initial_band(self) -> None:
        for layer in range(self.L):
            keys = [("h", layer)] + ([("c", layer)] if self.lstm else [])
            for key in keys:
                block = self.header(key, 0)
                values = (self.h0 if key[0] == "h" else self.c0)[layer]
                self.grid.block(block.top, block.left, values, "input")
                self.grid.text(
                    block.top - 1, block.left + block.cols, "h₀" if key[0] == "h" else "c₀", "note"
                )

    def mask(self, t: int, n: int) -> str:
        return self.b[(("mask",), t)].cell(n, 0)

    def forward_band(self, t: int) -> None:
        grid, N, H = self.grid, self.N, self.H
        mask = self.header(("mask",), t)
        for n in range(N):
            self.set(mask.top + n, mask.left, f"IF({t}<={self.len_block.cell(n, 0, True)},1,0)", "forward")
        xb = self.header(("x",), t)
        grid.block(xb.top, xb.left, self.x[:, t - 1, :], "input")
        for layer in range(self.L):
            prefix = self.prefix(layer)
            inp = xb if layer == 0 else self.b[(("h", layer - 1), t)]
            hprev = self.b[(("h", layer), t - 1)]
            W_ih, W_hh = self.pblock[f"{prefix}.W_ih"], self.pblock[f"{prefix}.W_hh"]
            b_ih, b_hh = self.pblock[f"{prefix}.b_ih"], self.pblock[f"{prefix}.b_hh"]
            GH = self.G * H

            def wx(n: int, k: int, inp: Block = inp, W_ih: Block = W_ih) -> str:
                return f"SUMPRODUCT({inp.row(n)},{_abs_row(W_ih, k)})"

            def wh(n: int, k: int, hprev: Block = hprev, W_hh: Block = W_hh) -> str:
                return f"SUMPRODUCT({hprev.row(n)},{_abs_row(W_hh, k)})"

            pre = self.header(("pre", layer), t)
            if self.gru:
                hhn = self.header(("hhn", layer), t)
                for n in range(N):
                    for j in range(H):
                        self.set(
                            hhn.top + n,
                            hhn.left + j,
                            f"{wh(n, 2 * H + j)}+{b_hh.cell(2 * H + j, 0, True)}",
                            "forward",
                        )
            gates = self.header(("gates", layer), t) if self.G > 1 else None
            for n in range(N):
                for k in range(GH):
                    if self.gru and k >= 2 * H:
                        j = k - 2 * H
                        body = (
                            f"{wx(n, k)}+{b_ih.cell(k, 0, True)}+"
                            f"{gates.cell(n, j)}*{self.b[(('hhn', layer), t)].cell(n, j)}"
                        )
                    else:
                        body = f"{wx(n, k)}+{b_ih.cell(k, 0, True)}+{wh(n, k)}+{b_hh.cell(k, 0, True)}"
                    self.set(pre.top + n, pre.left + k, body, "forward")
            if gates is not None:
                functions = GATE_FUNCTIONS[self.cell_kind]
                cells = {}
                for n in range(N):
                    for k in range(GH):
                        a = pre.cell(n, k)
                        cells[(n, k)] = fx.sigmoid(a) if functions[k // H] == "σ" else f"TANH({a})"
                for g, gate in enumerate(naming.GATES[self.cell_kind]):
                    self.step_term(
                        ("gates", layer), t, f"{prefix}.{gate}[{t}]", cells, (g * H, (g + 1) * H), "forward"
                    )
            self.header(("h", layer), t)
            last = t == self.T
            cells = {}
            if self.lstm:
                cb = self.header(("c", layer), t)
                cprev = self.b[(("c", layer), t - 1)]
                ccells = {}
                for n in range(N):
                    for j in range(H):
                        i_, f_, g_ = gates.cell(n, j), gates.cell(n, H + j), gates.cell(n, 2 * H + j)
                        ccells[(n, j)] = (
                            f"IF({self.mask(t, n)}=1,{f_}*{cprev.cell(n, j)}+{i_}*{g_},{cprev.cell(n, j)})"
                        )
                        o_ = gates.cell(n, 3 * H + j)
                        cells[(n, j)] = (
                            f"IF({self.mask(t, n)}=1,{o_}*TANH({cb.cell(n, j)}),{hprev.cell(n, j)})"
                        )
                self.step_term(
                    ("c", layer),
                    t,
                    f"{prefix}.c[{t}]",
                    ccells,
                    (0, H),
                    "forward",
                    all_rows_term=f"{prefix}.c_n" if last else None,
                )
            elif self.gru:
                for n in range(N):
                    for j in range(H):
                        z_, n_ = gates.cell(n, H + j), gates.cell(n, 2 * H + j)
                        h_ = hprev.cell(n, j)
                        cells[(n, j)] = f"IF({self.mask(t, n)}=1,{n_}+{z_}*({h_}-{n_}),{h_})"
            else:
                for n in range(N):
                    for j in range(H):
                        a = pre.cell(n, j)
                        new = f"MAX({a},0)" if self.cell_kind == "rnn_relu" else f"TANH({a})"
                        cells[(n, j)] = f"IF({self.mask(t, n)}=1,{new},{hprev.cell(n, j)})"
            self.step_term(
                ("h", layer),
                t,
                f"{prefix}.h[{t}]",
                cells,
                (0, H),
                "forward",
                all_rows_term=f"{prefix}.h_n" if last else None,
            )
        if self.many:
            self.head_forward(t, self.b[(("h", self.L - 1), t)], f"[{t}]")

    def head_forward(self, t: int, h: Block, suffix: str) -> None:
        """z, ŷ, y, ℓ of band t (many-to-many: per-step terms) or of the loss band."""
        N, O = self.N, self.O
        W, bias = self.pblock[f"{HEAD}.W"], self.pblock[f"{HEAD}.b"]
        act, slope = self.model.output_activation, self.model.slope
        zb, yb_hat = self.header(("z",), t), self.header(("yhat",), t)
        yb, ell = self.header(("y",), t), self.header(("ell",), t)
        zc = {
            (n, o): f"SUMPRODUCT({h.row(n)},{_abs_row(W, o)})+{bias.cell(o, 0, True)}"
            for n in range(N)
            for o in range(O)
        }
        ac = {(n, o): fx.activation(act, zb.cell(n, o), slope) for n in range(N) for o in range(O)}
        targets = self.y[:, t - 1, :] if self.many else self.y
        self.grid.block(yb.top, yb.left, targets, "input")
        if self.many:
            self.step_term(("z",), t, f"{HEAD}.z{suffix}", zc, (0, O), "forward")
            self.step_term(("yhat",), t, f"{HEAD}.a{suffix}", ac, (0, O), "forward")
        else:
            self.whole_term(("z",), t, f"{HEAD}.z", zc, "forward")
            self.whole_term(("yhat",), t, f"{HEAD}.a", ac, "forward")
        for n in range(N):
            for o in range(O):
                p, y = yb_hat.cell(n, o), yb.cell(n, o)
                element = ElementLoss(self.loss).element(p, y) if self.loss.kind == "bce" else f"({p}-{y})^2"
                body = f"IF({self.mask(t, n)}=1,{element},0)" if self.many else element
                self.set(ell.top + n, ell.left + o, body, "loss")

    def whole_term(
        self,
        key: tuple,
        t: int,
        name: str,
        cells: dict[tuple[int, int], str],
        phase: str,
        index: Callable[[int, int], int] | None = None,
    ) -> None:
        """Block (key, t) computes all rows of the whole term ``name`` (flat index n·cols + j)."""
        block = self.b[(key, t)]
        for (n, j), body in cells.items():
            flat = index(n, j) if index is not None else n * block.cols + j
            self.set(block.top + n, block.left + j, body, phase, (name, flat))
        values = self.term_value(self.torch, name)
        if values is not None:
            flat_values = values.reshape(-1)
            table = np.zeros((self.N, block.cols))
            for n, j in cells:
                table[n, j] = flat_values[index(n, j) if index is not None else n * block.cols + j]
            rows = list(range(self.N))
            self.torch_cols(key, t, table, rows, 0, self.torch_source(name))

    # -- loss -------------------------------------------------------------------------------------------

    def loss_band(self) -> None:
        grid, T, N, O = self.grid, self.T, self.N, self.O
        left = self.band_left(T + 1)
        if not self.many:
            self.head_forward(T + 1, self.b[(("h", self.L - 1), T)], "")
            ells = [self.b[(("ell",), T + 1)].range()]
            count_body = f"{N * O}"
        else:
            ells = [self.b[(("ell",), t)].range() for t in range(1, T + 1)]
            masks = [f"SUM({self.b[(('mask',), t)].range()})" for t in range(1, T + 1)]
            count_body = f"{O}*({'+'.join(masks)})"
        row = self.loss_row
        grid.text(row, 1, "n: the elements in the mean (output size × real steps)", "loss")
        self.set(row, left, count_body, "loss")
        self.count_ref = address(row, left, absolute=True)
        total = f"SUM({','.join(ells)})"
        if self.loss.reduction == "mean":
            body = f"{total}/{self.count_ref}"
        else:
            body = total
        if self.loss.half:
            body = f"0.5*({body})"
        grid.text(row + 1, 1, "L = (½·) Σ ℓ (/ n for a mean)", "loss")
        self.set(row + 1, left, body, "loss", ("loss.L", 0))
        values = self.term_value(self.torch, "loss.L")
        if values is not None:
            grid.text(row + 2, 1, f"torch's L ({self.torch_source('loss.L')}) and |Δ|", "torch")
            grid.set(row + 2, left, float(values.reshape(-1)[0]), "torch")
            grid.set(
                row + 3,
                left,
                fx.formula(fx.absolute_difference(address(row + 1, left), address(row + 2, left))),
                "delta",
            )
        if not self.many:
            self.head_backward(T + 1, "")
            dz, W = self.b[(("dz",), T + 1)], self.pblock[f"{HEAD}.W"]
            self.header(("dhn",), T + 1)
            cells = {
                (n, j): fx.dot([(dz.cell(n, o), W.cell(o, j, True)) for o in range(O)])
                for n in range(N)
                for j in range(self.H)
            }
            self.whole_term(("dhn",), T + 1, f"{HEAD}.dL_dx", cells, "backward")

    def head_backward(self, t: int, suffix: str) -> None:
        N, O = self.N, self.O
        act, slope = self.model.output_activation, self.model.slope
        yhat, y, z = self.b[(("yhat",), t)], self.b[(("y",), t)], self.b[(("z",), t)]
        dyhat = self.header(("dyhat",), t)
        self.header(("dz",), t)
        count = self.count_ref if self.many else str(N * O)
        gcells, zcells = {}, {}
        for n in range(N):
            for o in range(O):
                grad = ElementLoss(self.loss).element_gradient(yhat.cell(n, o), y.cell(n, o), count)
                gcells[(n, o)] = f"IF({self.mask(t, n)}=1,{grad},0)" if self.many else grad
                zcells[(n, o)] = fx.times_derivative(
                    act, dyhat.cell(n, o), z.cell(n, o), yhat.cell(n, o), slope
                )
        if self.many:
            self.step_term(("dyhat",), t, f"{HEAD}.dL_da{suffix}", gcells, (0, O), "backward")
            self.step_term(("dz",), t, f"{HEAD}.dL_dz{suffix}", zcells, (0, O), "backward")
        else:
            self.whole_term(("dyhat",), t, f"{HEAD}.dL_da", gcells, "backward")
            self.whole_term(("dz",), t, f"{HEAD}.dL_dz", zcells, "backward")

    # -- backward -----------------------------------------------------------------------------------

    def backward_band(self, t: int) -> None:
        N, H, T = self.N, self.H, self.T
        GH = self.G * H
        if self.many:
            self.head_backward(t, f"[{t}]")
            dz, W = self.b[(("dz",), t)], self.pblock[f"{HEAD}.W"]
            self.header(("dxhead",), t)
            cells = {
                (n, j): fx.dot([(dz.cell(n, o), W.cell(o, j, True)) for o in range(self.O)])
                for n in range(N)
                for j in range(H)
            }
            self.step_term(("dxhead",), t, f"{HEAD}.dL_dx[{t}]", cells, (0, H), "backward")
        for layer in reversed(range(self.L)):
            prefix = self.prefix(layer)
            top_layer = layer == self.L - 1
            W_ih, W_hh = self.pblock[f"{prefix}.W_ih"], self.pblock[f"{prefix}.W_hh"]

            def arriving(n: int, j: int, layer: int = layer, top_layer: bool = top_layer) -> str:
                parts = []
                if top_layer and self.many:
                    parts.append(self.b[(("dxhead",), t)].cell(n, j))
                elif not top_layer:
                    parts.append(self.b[(("dx", layer + 1), t)].cell(n, j))
                if t < T:
                    parts.append(self.b[(("carry_h", layer), t + 1)].cell(n, j))
                elif top_layer and not self.many:
                    parts.append(self.b[(("dhn",), T + 1)].cell(n, j))
                return _sum(parts)

            dh = self.header(("dh", layer), t)
            cells = {(n, j): arriving(n, j) for n in range(N) for j in range(H)}
            self.step_term(("dh", layer), t, f"{prefix}.dL_dh[{t}]", cells, (0, H), "backward")
            gates = self.b.get((("gates", layer), t))
            hcur, hprev = self.b[(("h", layer), t)], self.b[(("h", layer), t - 1)]
            if self.lstm:
                dc = self.header(("dc", layer), t)
                c, cprev = self.b[(("c", layer), t)], self.b[(("c", layer), t - 1)]
                cells = {}
                for n in range(N):
                    for j in range(H):
                        carried = self.b[(("carry_c", layer), t + 1)].cell(n, j) if t < T else "0"
                        o_ = gates.cell(n, 3 * H + j)
                        new = _sum([carried, f"{dh.cell(n, j)}*{o_}*(1-TANH({c.cell(n, j)})^2)"])
                        cells[(n, j)] = f"IF({self.mask(t, n)}=1,{new},{carried})"
                self.step_term(("dc", layer), t, f"{prefix}.dL_dc[{t}]", cells, (0, H), "backward")
            da = self.header(("da", layer), t)
            cells = {}
            for n in range(N):
                m = self.mask(t, n)
                for j in range(H):
                    d_h = dh.cell(n, j)
                    if self.lstm:
                        d_c = dc.cell(n, j)
                        i_, f_, g_, o_ = (gates.cell(n, q * H + j) for q in range(4))
                        bodies = [
                            f"{d_c}*{g_}*{i_}*(1-{i_})",
                            f"{d_c}*{cprev.cell(n, j)}*{f_}*(1-{f_})",
                            f"{d_c}*{i_}*(1-{g_}*{g_})",
                            f"{d_h}*TANH({c.cell(n, j)})*{o_}*(1-{o_})",
                        ]
                    elif self.gru:
                        r_, z_, n_ = (gates.cell(n, q * H + j) for q in range(3))
                        hhn = self.b[(("hhn", layer), t)].cell(n, j)
                        da_n = da.cell(n, 2 * H + j)
                        bodies = [
                            f"{da_n}*{hhn}*{r_}*(1-{r_})",
                            f"{d_h}*({hprev.cell(n, j)}-{n_})*{z_}*(1-{z_})",
                            f"{d_h}*(1-{z_})*(1-{n_}*{n_})",
                        ]
                    elif self.cell_kind == "rnn_relu":
                        bodies = [f"IF({hcur.cell(n, j)}>0,{d_h},0)"]
                    else:
                        bodies = [f"{d_h}*(1-{hcur.cell(n, j)}*{hcur.cell(n, j)})"]
                    for q, body in enumerate(bodies):
                        cells[(n, q * H + j)] = f"IF({m}=1,{body},0)"
            names = naming.gate_grad_names(self.cell_kind)
            for q, gname in enumerate(names):
                self.step_term(
                    ("da", layer), t, f"{prefix}.{gname}[{t}]", cells, (q * H, (q + 1) * H), "backward"
                )
            if self.gru:
                dghn = self.header(("dghn", layer), t)
                for n in range(N):
                    for j in range(H):
                        self.set(
                            dghn.top + n,
                            dghn.left + j,
                            f"{da.cell(n, 2 * H + j)}*{gates.cell(n, j)}",
                            "backward",
                        )

            def dgh(n: int, k: int, da: Block = da, layer: int = layer) -> str:
                if self.gru and k >= 2 * H:
                    return self.b[(("dghn", layer), t)].cell(n, k - 2 * H)
                return da.cell(n, k)

            carry = self.header(("carry_h", layer), t)
            cells = {}
            for n in range(N):
                for j in range(H):
                    matmul = fx.dot([(dgh(n, k), W_hh.cell(k, j, True)) for k in range(GH)])
                    if self.gru:
                        matmul = f"{dh.cell(n, j)}*{gates.cell(n, H + j)}+{matmul}"
                    cells[(n, j)] = f"IF({self.mask(t, n)}=1,{matmul},{dh.cell(n, j)})"
            if t == 1 and self.initial_given:
                self.whole_term(("carry_h", layer), t, f"{prefix}.dL_dh0", cells, "backward")
            else:
                for (n, j), body in cells.items():
                    self.set(carry.top + n, carry.left + j, body, "backward")
            if self.lstm:
                carry_c = self.header(("carry_c", layer), t)
                cells = {
                    (n, j): f"IF({self.mask(t, n)}=1,{dc.cell(n, j)}*{gates.cell(n, H + j)},{dc.cell(n, j)})"
                    for n in range(N)
                    for j in range(H)
                }
                if t == 1 and self.initial_given:
                    self.whole_term(("carry_c", layer), t, f"{prefix}.dL_dc0", cells, "backward")
                else:
                    for (n, j), body in cells.items():
                        self.set(carry_c.top + n, carry_c.left + j, body, "backward")
            n_in = self.I if layer == 0 else H
            self.header(("dx", layer), t)
            cells = {
                (n, i): fx.dot([(da.cell(n, k), W_ih.cell(k, i, True)) for k in range(GH)])
                for n in range(N)
                for i in range(n_in)
            }

            def dx_index(n: int, i: int, n_in: int = n_in) -> int:
                if self.model.batch_first:
                    return (n * T + (t - 1)) * n_in + i
                return ((t - 1) * N + n) * n_in + i

            self.whole_term(("dx", layer), t, f"{prefix}.dL_dx", cells, "backward", index=dx_index)

    # -- parameters: gradients, clipping, update --------------------------------------------------

    def parameter_section(self, top: int) -> None:
        grid, T, H = self.grid, self.T, self.H
        GH = self.G * H
        grid.text(top, 1, "Parameter gradients: sums over the bands (t = 1..T) and the sequences", "title")
        top += 1
        grads: dict[str, dict[tuple[int, int], str]] = {}
        for layer in range(self.L):
            prefix = self.prefix(layer)
            n_in = self.I if layer == 0 else H

            def inp(t: int, layer: int = layer) -> Block:
                return self.b[(("x",), t)] if layer == 0 else self.b[(("h", layer - 1), t)]

            def dgh_col(t: int, k: int, layer: int = layer) -> str:
                if self.gru and k >= 2 * H:
                    return self.b[(("dghn", layer), t)].column(k - 2 * H)
                return self.b[(("da", layer), t)].column(k)

            da = {t: self.b[(("da", layer), t)] for t in range(1, T + 1)}
            grads[f"{prefix}.W_ih"] = {
                (k, i): _sum([f"SUMPRODUCT({da[t].column(k)},{inp(t).column(i)})" for t in range(1, T + 1)])
                for k in range(GH)
                for i in range(n_in)
            }
            grads[f"{prefix}.W_hh"] = {
                (k, j): _sum(
                    [
                        f"SUMPRODUCT({dgh_col(t, k)},{self.b[(('h', layer), t - 1)].column(j)})"
                        for t in range(1, T + 1)
                    ]
                )
                for k in range(GH)
                for j in range(H)
            }
            grads[f"{prefix}.b_ih"] = {
                (k, 0): _sum([f"SUM({da[t].column(k)})" for t in range(1, T + 1)]) for k in range(GH)
            }
            grads[f"{prefix}.b_hh"] = {
                (k, 0): _sum([f"SUM({dgh_col(t, k)})" for t in range(1, T + 1)]) for k in range(GH)
            }
        if self.many:
            bands = [(self.b[(("dz",), t)], self.b[(("h", self.L - 1), t)]) for t in range(1, T + 1)]
        else:
            bands = [(self.b[(("dz",), T + 1)], self.b[(("h", self.L - 1), T)])]
        grads[f"{HEAD}.W"] = {
            (o, j): _sum([f"SUMPRODUCT({dz.column(o)},{h.column(j)})" for dz, h in bands])
            for o in range(self.O)
            for j in range(H)
        }
        grads[f"{HEAD}.b"] = {
            (o, 0): _sum([f"SUM({dz.column(o)})" for dz, _ in bands]) for o in range(self.O)
        }

        names = [name for name, _, _ in param_table(self.model)]
        gblocks, top = self.param_group(
            top,
            "∂L/∂θ",
            "backward",
            names,
            grads,
            lambda name: f"{name.split('.')[0]}.dL_d{name.split('.')[1]}",
        )
        used = gblocks
        if self.clip is not None:
            grid.text(top, 1, "Clipping (as torch.nn.utils.clip_grad_norm_ / clip_grad_value_)", "title")
            top += 1
            clipped: dict[str, dict[tuple[int, int], str]] = {}
            if self.clip.max_norm is not None:
                ranges = ",".join(gblocks[name].range() for name in names)
                grid.text(top, 1, "‖∂L/∂θ‖₂ over every parameter (before clipping)", "update")
                self.set(top, LEFT, f"SQRT(SUMSQ({ranges}))", "update", ("clip.total_norm", 0))
                norm_cell = address(top, LEFT, absolute=True)
                values = self.term_value(self.torch, "clip.total_norm")
                if values is not None:
                    grid.set(top, LEFT + 1, float(values.reshape(-1)[0]), "torch")
                    grid.set(
                        top,
                        LEFT + 2,
                        fx.formula(fx.absolute_difference(address(top, LEFT), address(top, LEFT + 1))),
                        "delta",
                    )
                    grid.text(top, LEFT + 3, f"← hand, {self.torch_source('clip.total_norm')}, |Δ|", "note")
                top += 1
                grid.text(top, 1, "coef = min(max_norm / (‖∂L/∂θ‖ + 1e-6), 1)  (torch's 1e-6)", "update")
                self.set(top, LEFT, f"MIN({self.clip_ref}/({norm_cell}+0.000001),1)", "update")
                coef = address(top, LEFT, absolute=True)
                top += 2
                for name in names:
                    block = gblocks[name]
                    clipped[name] = {
                        (i, j): f"{coef}*{block.cell(i, j)}"
                        for i in range(block.rows)
                        for j in range(block.cols)
                    }
            else:
                for name in names:
                    block = gblocks[name]
                    clipped[name] = {
                        (i, j): f"MAX(-{self.clip_ref},MIN({self.clip_ref},{block.cell(i, j)}))"
                        for i in range(block.rows)
                        for j in range(block.cols)
                    }
            used, top = self.param_group(
                top,
                "ĝ = clip(∂L/∂θ)",
                "update",
                names,
                clipped,
                lambda name: f"clip.grad.{name}",
            )
        grid.text(top, 1, f"Update ({self.optimizer.kind}: {self.rule.equation})", "title")
        top += 1
        nexts = {}
        for name in names:
            block, grad = self.pblock[name], used[name]
            nexts[name] = {
                (i, j): self.rule.build(
                    block.cell(i, j, True), grad.cell(i, j), self.hyper, {}, str(self.step)
                ).next
                for i in range(block.rows)
                for j in range(block.cols)
            }
        _, top = self.param_group(top, "θ′", "update", names, nexts, lambda name: f"{name}_next")
        kind = self.optimizer.kind
        for key, body in self.rule.scalars(self.hyper, str(self.step)):
            name = f"{kind}.{key}"
            if name not in self.hand:
                continue
            grid.text(top, 1, f"{self.hand[name].symbol} ({name})", "state")
            self.set(top, LEFT, body, "state", (name, 0))
            values = self.term_value(self.torch, name)
            if values is not None:
                grid.set(top, LEFT + 1, float(values.reshape(-1)[0]), "torch")
                grid.set(
                    top,
                    LEFT + 2,
                    fx.formula(fx.absolute_difference(address(top, LEFT), address(top, LEFT + 1))),
                    "delta",
                )
            top += 1

    def param_group(
        self,
        top: int,
        title: str,
        phase: str,
        names: list[str],
        cells: dict[str, dict[tuple[int, int], str]],
        term_of,
    ) -> tuple[dict[str, Block], int]:  # noqa: ANN001
        """One row of parameter-shaped blocks per layer (W_ih | W_hh | b_ih | b_hh; W_y | b_y), each
        with torch's values and |Δ| under it. Returns the hand blocks and the next free row."""
        grid = self.grid
        blocks: dict[str, Block] = {}
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(name.split(".")[0], []).append(name)
        for layer_name, members in groups.items():
            rows = max(self.pblock[name].rows for name in members)
            grid.text(top, 1, f"{title}: {layer_name}", phase)
            for n, label in enumerate(self.param_rows.get(layer_name, [])[:rows]):
                grid.text(top + 2 + n, 1, label, "header")
            left = LEFT
            for name in members:
                shape = self.pblock[name]
                block = Block(top + 2, left, shape.rows, shape.cols)
                term = term_of(name)
                symbol = self.hand[term].symbol if term in self.hand else term
                grid.text(top + 1, left, symbol, "header")
                for (i, j), body in cells[name].items():
                    self.set(block.top + i, block.left + j, body, phase, (term, i * block.cols + j))
                values = self.term_value(self.torch, term)
                if values is not None:
                    values = values.reshape(shape.rows, shape.cols)
                    t_top = block.top + rows + 1
                    d_top = t_top + rows + 1
                    grid.text(t_top - 1, left, self.torch_source(term), "torch")
                    for i in range(shape.rows):
                        for j in range(shape.cols):
                            grid.set(t_top + i, left + j, float(values[i, j]), "torch")
                            body = fx.absolute_difference(block.cell(i, j), address(t_top + i, left + j))
                            grid.set(d_top + i, left + j, fx.formula(body), "delta")
                blocks[name] = block
                left += shape.cols + 1
            grid.text(top + 2 + rows, 1, "torch's values", "torch")
            grid.text(top + 3 + 2 * rows, 1, "|Δ| = |hand − torch|", "delta")
            top += 3 * rows + 5
        return blocks, top


def _abs_row(block: Block, i: int) -> str:
    return area(block.top + i, block.left, 1, block.cols, absolute=True)
