"""The live-sheet block API: a block is (term, equation, phase, shape, cell body), laid out by a
:class:`Sheet` with torch's values and |Δ| = |hand − torch| beside it.

Every walkthrough sheet shares this module's layout: column A holds titles and row labels, the
hand blocks start in column B (:data:`LEFT`), torch's values sit ``width + 1`` columns to their
right and the |Δ| formulas as far again; :data:`LEGEND` colours the phases. The per-family
modules lay out their own blocks (the dense walkthrough, the conv walkthrough's maps, the sliced
makemore and transformer sheets) and leave to this module what every family writes alike:

- the optimizer's hyper-parameters as input cells (:func:`hyper_inputs`; under a schedule η is
  the step's lr in force);
- gradient clipping (:func:`clip_blocks`: ‖g‖, the coefficient, each clipped gradient ĝ);
- the update (:func:`update_blocks`: the optimizer's state before the step as inputs, its new
  state, the updated parameters ``*_next``, its scalars), in the formulas of
  :func:`handgrad.workbook.formulas.update_rule`.

The clip and update writers address a parameter's cells by flat index (C order of the term), so
one writer serves the dense sheet's 2-D blocks and the conv sheet's maps: a sheet places a
parameter-shaped block through :meth:`Sheet.param_inputs`, :meth:`Sheet.param_slot` and
:meth:`Sheet.param_computed`, which a family's sheet may lay out its own way.

The numbers before step k (weights, optimizer state) come from the run's recorded hand trace of
step k − 1 (``captured``: the writer keeps k − 1 with every walkthrough step k), or the run's
initial weights at k = 1; the workbook never re-runs a side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.formula import ArrayFormula

from handgrad.contract.spec import SpecError
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Clip, Optimizer
from handgrad.harness import Experiment
from handgrad.workbook import formulas as fx
from handgrad.workbook.grid import Grid, address, area

Captured = Mapping[int, tuple[StepTrace, StepTrace]]
ParamTable = list[tuple[str, tuple[int, ...], str]]

LEFT = 2  # the hand blocks start in column B; column A holds titles and row labels
LEGEND = ("input", "forward", "loss", "backward", "update", "state", "torch", "delta")
LEGEND_TEXT = {
    "input": "input (edit me)",
    "forward": "forward",
    "loss": "loss",
    "backward": "backward",
    "update": "update",
    "state": "optimizer state",
    "torch": "torch's value",
    "delta": "|Δ| by formula",
}


def write_legend(grid: Grid, row: int) -> None:
    """The legend row: each phase's colour with its meaning."""
    grid.text(row, 1, "Legend", "header")
    for j, key in enumerate(LEGEND):
        grid.text(row, LEFT + j, LEGEND_TEXT[key], key)


# --- steps and the numbers before a step ------------------------------------------------------


def default_steps(captured: Mapping[int, object]) -> list[int]:
    """Walkthrough steps when none are named: step 1, and every captured k whose k − 1 is captured
    too (the writer captures k − 1 for the weights before step k)."""
    return [k for k in sorted(captured) if k == 1 or k - 1 in captured]


def step_grids(
    experiment: Experiment,
    captured: Captured,
    steps: Iterable[int] | None,
    reason: Callable[[Experiment], str | None],
    grid: Callable[[Experiment, int, Captured], Grid],
) -> list[Grid]:
    """One Grid per walkthrough step (``steps``, else :func:`default_steps` of ``captured``), each
    ``grid(experiment, step, captured)``; ``reason(experiment)``, when it is not None, refuses the
    run as a SpecError."""
    why = reason(experiment)
    if why is not None:
        raise SpecError("workbook", why)
    chosen = sorted(set(steps)) if steps is not None else default_steps(captured)
    return [grid(experiment, step, captured) for step in chosen]


def trace_before(step: int, captured: Captured) -> StepTrace | None:
    """The hand trace of step − 1 (None at step 1); a SpecError when it was not captured."""
    if step == 1:
        return None
    if step - 1 not in captured:
        raise SpecError(
            "walkthrough",
            f"step {step - 1} (the weights and state before step {step}) was not captured",
        )
    return captured[step - 1][0]


def params_before(
    experiment: Experiment, step: int, captured: Captured, names: Iterable[str]
) -> dict[str, np.ndarray]:
    """The weights before ``step``: the run's initial ones, or the ``*_next`` of step − 1."""
    previous = trace_before(step, captured)
    if previous is None:
        return {name: np.asarray(experiment.initial_params[name], dtype=float) for name in names}
    return {name: np.asarray(previous.value(f"{name}_next"), dtype=float) for name in names}


# --- blocks ---------------------------------------------------------------------------------------


class Cells(Protocol):
    """A laid-out term's cells, addressed by flat index (C order of the term's value)."""

    def ref(self, flat: int) -> str: ...


@dataclass
class Block:
    """A laid-out block of hand cells: its top-left cell and its shape."""

    top: int
    left: int
    rows: int
    cols: int

    def cell(self, i: int, j: int, absolute: bool = False) -> str:
        return address(self.top + i, self.left + j, absolute=absolute)

    def ref(self, flat: int) -> str:
        return self.cell(*divmod(flat, self.cols))

    def range(self, cols: int | None = None, extra: int = 0) -> str:
        """The block's range (``cols`` first columns only; ``extra`` more columns to the right)."""
        width = (self.cols if cols is None else cols) + extra
        return area(self.top, self.left, self.rows, width)


def as_matrix(value: np.ndarray) -> np.ndarray:
    """A term's value as the 2-D block the sheet shows: a vector (a bias) becomes a column."""
    array = np.asarray(value, dtype=float)
    if array.ndim == 0:
        return array.reshape(1, 1)
    if array.ndim == 1:
        return array.reshape(-1, 1)
    return array


def unit_labels(count: int, prefix: str = "unit") -> list[str]:
    return [f"{prefix} {j + 1}" for j in range(count)]


def param_labels(short: str, rows: int, cols: int) -> tuple[list[str], list[str]]:
    """(column labels, row labels) of a parameter-shaped block (``short``: W, b or Wt)."""
    if short == "b":
        col_labels = ["b"]
    elif short == "Wt":
        col_labels = [*unit_labels(cols - 1, "in"), "bias"]
    else:
        col_labels = unit_labels(cols, "in")
    return col_labels, unit_labels(rows, "unit")


class Sheet:
    """Lays out the blocks of one live sheet; ``top`` is the next free row. Blocks are ``width``
    columns wide at most; torch's values and |Δ| sit to their right."""

    def __init__(self, grid: Grid, step: int, width: int, hand: StepTrace, torch: StepTrace | None) -> None:
        self.grid = grid
        self.step = step
        self.width = width
        self.torch_left = LEFT + width + 1
        self.delta_left = self.torch_left + width + 1
        self.hand = hand
        self.torch = torch
        self.top = 1

    def title(self, text: str, style: str, torch: bool) -> None:
        self.grid.text(self.top, 1, text, style)
        if torch:
            self.grid.text(self.top, self.torch_left, "torch", "torch")
            self.grid.text(self.top, self.delta_left, "|Δ| = |hand − torch|", "delta")

    def labels(self, row: int, col_labels: list[str], row_labels: list[str], rows: int, torch: bool) -> None:
        lefts = [LEFT, self.torch_left, self.delta_left] if torch else [LEFT]
        for left in lefts:
            self.grid.texts([(row, left + j) for j in range(len(col_labels))], col_labels, "header")
        labels = row_labels[:rows]
        self.grid.texts([(row + 1 + i, 1) for i in range(len(labels))], labels, "header")

    def has_torch(self, term: str) -> bool:
        return self.torch is not None and term in self.torch

    def mirror(self, term: str, cells: Iterable[tuple[int, int, int]]) -> None:
        """Torch's values of ``term`` beside the hand cells ((row, col, flat index) each), and the
        |Δ| formula beside those: the hand layout shifted to the torch and |Δ| columns."""
        placed = list(cells)
        self._mirror(term, [(row, col) for row, col, _ in placed], [flat for _, _, flat in placed])

    def _mirror(self, term: str, hand: list[tuple[int, int]], flat: Sequence[int]) -> None:
        """:meth:`mirror` of the hand cells ``hand`` computing elements ``flat`` of ``term``."""
        assert self.torch is not None
        values = np.ravel(self.torch.value(term)).astype(float)
        to_torch, to_delta = self.torch_left - LEFT, self.delta_left - LEFT
        torch = [(row, col + to_torch) for row, col in hand]
        self.grid.set_many(torch, values[np.asarray(flat, dtype=np.intp)].tolist(), "torch")
        # one formula text per column, the row a field: "=ABS(B{0}-Z{0})"
        shape = fx.formula(fx.absolute_difference("{hand}{0}", "{torch}{0}"))
        by_column = {
            col: shape.replace("{hand}", get_column_letter(col)).replace(
                "{torch}", get_column_letter(col + to_torch)
            )
            for col in {col for _, col in hand}
        }
        formulas = [by_column[col].format(row) for row, col in hand]
        self.grid.difference([(row, col + to_delta) for row, col in hand], formulas, hand, torch)

    def known_term(self, term: str, size: int, shape: object) -> None:
        """A SpecError unless the hand trace has ``term`` with ``size`` elements."""
        if term not in self.hand:
            raise SpecError("workbook", f"the hand trace of step {self.step} has no term {term!r}")
        found = np.asarray(self.hand.value(term)).size
        if found != size:
            raise SpecError("workbook", f"{term}: the sheet lays out {shape}, the hand term has {found}")

    def inputs(self, title: str, values: np.ndarray, col_labels: list[str], row_labels: list[str]) -> Block:
        """A block of plain input cells (editable)."""
        matrix = as_matrix(values)
        self.title(title, "header", torch=False)
        self.labels(self.top + 1, col_labels, row_labels, matrix.shape[0], torch=False)
        block = Block(self.top + 2, LEFT, *matrix.shape)
        self.grid.block(block.top, block.left, matrix, "input")
        self.top = block.top + block.rows + 1
        return block

    def computed(
        self,
        term: str,
        title: str,
        phase: str,
        cells: Mapping[tuple[int, int], object],
        shape: tuple[int, int],
        col_labels: list[str],
        row_labels: list[str],
        *,
        array: str | None = None,
        ones_column: bool = False,
        indices: np.ndarray | None = None,
    ) -> Block:
        """A block of formulas computing ``term`` (per cell in ``cells``, or one array formula
        ``array`` over the block), with torch's values and |Δ| beside it. ``indices`` (rows × cols
        flat indices into the term) lays out a slice of a larger term."""
        if term not in self.hand:
            raise SpecError("workbook", f"the hand trace of step {self.step} has no term {term!r}")
        expected = as_matrix(self.hand.value(term)).shape
        if indices is None:
            if expected != shape:
                raise SpecError(
                    "workbook", f"{term}: the sheet lays out {shape}, the hand term is {expected}"
                )
            indices = np.arange(shape[0] * shape[1]).reshape(shape)
        elif indices.shape != shape or int(indices.max()) >= int(np.prod(expected)):
            raise SpecError(
                "workbook", f"{term}: a slice {indices.shape} of the hand term {expected} does not fit"
            )
        has_torch = self.has_torch(term)
        self.title(f"{self.hand[term].symbol} = {title}", phase, torch=has_torch)
        labels = [*col_labels, "1"] if ones_column else col_labels
        self.labels(self.top + 1, labels, row_labels, shape[0], torch=False)
        if has_torch:
            for left in (self.torch_left, self.delta_left):
                self.grid.texts(
                    [(self.top + 1, left + j) for j in range(len(col_labels))], col_labels, "header"
                )
        block = Block(self.top + 2, LEFT, *shape)
        rows, cols = shape
        grid = self.grid
        placed = [
            (row, col) for row in range(block.top, block.top + rows) for col in range(LEFT, LEFT + cols)
        ]
        if array is None:
            bodies = [str(cells[(i, j)]) for i in range(rows) for j in range(cols)]
            grid.set_many(placed, formulas(bodies), phase)
        else:
            grid.set(block.top, block.left, ArrayFormula(block.range(), fx.formula(array)), phase)
            grid.set_many(placed[1:], [None] * (len(placed) - 1), phase)
        flat = np.ravel(indices).tolist()
        grid.check_many(placed, self.step, term, flat)
        if ones_column:
            for i in range(rows):
                grid.set(block.top + i, block.left + cols, 1.0, "note")
        if has_torch:
            self._mirror(term, placed, flat)
        self.top = block.top + rows + 1
        return block

    # -- parameter-shaped blocks (the clip and update writers place them through these) ---------

    def param_inputs(self, title: str, value: np.ndarray, name: str) -> Cells:
        """Input cells holding a parameter-shaped ``value`` (an optimizer's state before the step)."""
        matrix = as_matrix(value)
        col_labels, row_labels = param_labels(name.split(".", 1)[1], *matrix.shape)
        return self.inputs(title, matrix, col_labels, row_labels)

    def param_slot(self, top: int, like: Cells) -> tuple[Cells, int]:
        """Where :meth:`param_computed` of a block shaped as ``like`` puts its cells when ``top``
        is the next free row, and the next free row after it."""
        assert isinstance(like, Block)
        return Block(top + 2, LEFT, like.rows, like.cols), top + 2 + like.rows + 1

    def param_computed(
        self, term: str, title: str, phase: str, name: str, like: Cells, body: Callable[[int], str]
    ) -> Cells:
        """A block computing ``term``, shaped as the parameter ``name``'s block ``like``; the
        formula of element ``flat`` is ``body(flat)``."""
        assert isinstance(like, Block)
        rows, cols = like.rows, like.cols
        col_labels, row_labels = param_labels(name.split(".", 1)[1], rows, cols)
        cells = {(i, j): body(i * cols + j) for i in range(rows) for j in range(cols)}
        return self.computed(term, title, phase, cells, (rows, cols), col_labels, row_labels)

    def total_norm(self, clip: Clip, cells: list[str]) -> str:
        """The cell of ‖g‖ over every gradient (``cells``), before clipping, as a live formula."""
        p = "∞" if math.isinf(clip.norm_type) else fx.number(clip.norm_type)
        block = self.computed(
            "clip.total_norm",
            f"‖∂L/∂θ‖_{p} over every parameter (before clipping)",
            "update",
            {(0, 0): fx.clip_norm(clip, cells)},
            (1, 1),
            ["‖g‖"],
            ["‖g‖"],
        )
        return block.cell(0, 0)

    def next_title(self, symbol: str, rule: fx.UpdateRule, stateless_sgd: bool) -> str:
        """The equation beside an updated parameter ``symbol``′."""
        return f"{symbol} − η·∂L/∂{symbol}" if stateless_sgd else f"{symbol} after the step ({rule.equation})"


def flat_refs(cells: Cells, count: int) -> list[str]:
    """``cells.ref(flat)`` for flat = 0 .. count − 1 (a block's addresses made a row at a time)."""
    if type(cells) is Block and count <= cells.rows * cells.cols:
        letters = [get_column_letter(cells.left + j) for j in range(cells.cols)]
        found = [f"{letter}{row}" for row in range(cells.top, cells.top + cells.rows) for letter in letters]
        return found[:count]
    return [cells.ref(flat) for flat in range(count)]


def formulas(bodies: list[str]) -> list[str]:
    """:func:`handgrad.workbook.formulas.formula` of each body (``=`` before it; too long: TooLarge)."""
    texts = [body if body[:1] == "=" else "=" + body for body in bodies]
    if texts and max(map(len, texts)) > fx.MAX_FORMULA_CHARS:
        fx.formula(next(text for text in texts if len(text) > fx.MAX_FORMULA_CHARS))  # raises
    return texts


def _size(name: str, table: ParamTable) -> int:
    return math.prod(next(shape for n, shape, _ in table if n == name))


# --- the optimizer's inputs, clipping and update -------------------------------------------------


def hyper_inputs(
    sheet: Sheet, rule: fx.UpdateRule, optimizer: Optimizer, *, named: bool = True
) -> dict[str, str]:
    """The optimizer's hyper-parameters as input cells from ``sheet.top`` on, one a row; returns
    each key's reference (its defined name when ``named``, else the cell's absolute address). Under
    a schedule η is the lr in force at this step (the hand trace's ``<kind>.lr``), and the
    schedule's own hyper-parameters stay on the Training sheet (they move η after this step)."""
    grid, refs = sheet.grid, {}
    schedule_keys = {hyper.key for hyper in fx.schedule_hyper(rule.schedule)}
    for hyper in rule.hyper(optimizer):
        if hyper.key in schedule_keys:
            continue
        label = f"{hyper.symbol} ({hyper.key}, name {hyper.name})" if named else hyper.symbol
        value = float(hyper.value)
        if hyper.key == "lr" and rule.schedule is not None:
            value = float(np.asarray(sheet.hand.value(f"{optimizer.kind}.lr")).reshape(-1)[0])
            label += f": the lr in force at step {sheet.step} ({fx.schedule_equation(rule.schedule)})"
        grid.text(sheet.top, 1, label, "header")
        grid.set(sheet.top, LEFT, value, "input")
        if named:
            grid.name(hyper.name, sheet.top, LEFT)
            refs[hyper.key] = hyper.name
        else:
            refs[hyper.key] = address(sheet.top, LEFT, absolute=True)
        sheet.top += 1
    return refs


def clip_blocks(
    sheet: Sheet, clip: Clip, table: ParamTable, param_grads: Mapping[str, Cells], hyper_names: dict[str, str]
) -> dict[str, Cells]:
    """Gradient clipping between the backward pass and the update: ‖g‖ over every gradient and
    the coefficient (by norm), then each clipped gradient ĝ, the blocks the update reads."""
    grid = sheet.grid
    grid.text(sheet.top, 1, f"Gradient clipping ({fx.clip_equation(clip)})", "title")
    sheet.top += 1
    coefficient = None
    if clip.max_norm is not None:
        cells = [param_grads[name].ref(flat) for name, _, _ in table for flat in range(_size(name, table))]
        norm = sheet.total_norm(clip, cells)
        grid.text(sheet.top, 1, "coef = min(max_norm/(‖g‖ + 10⁻⁶), 1)  (no torch term)", "update")
        body = fx.clip_coefficient(hyper_names, norm)
        grid.set(sheet.top + 1, LEFT, fx.formula(body), "update")
        coefficient = address(sheet.top + 1, LEFT)
        sheet.top += 3
    clipped: dict[str, Cells] = {}
    for name, _, symbol in table:
        g = param_grads[name]
        clipped[name] = sheet.param_computed(
            f"clip.grad.{name}",
            f"∂L/∂{symbol} clipped",
            "update",
            name,
            g,
            lambda flat, g=g: fx.clipped(clip, hyper_names, g.ref(flat), coefficient),
        )
    sheet.top += 1
    return clipped


def update_blocks(
    sheet: Sheet,
    captured: Captured,
    optimizer: Optimizer,
    rule: fx.UpdateRule,
    table: ParamTable,
    params: Mapping[str, Cells],
    grads: Mapping[str, Cells],
    hyper_names: dict[str, str],
    *,
    scalars: bool = True,
) -> None:
    """The optimizer's blocks in computation order: its state (reading the state before the step,
    step − 1's hand trace, shown as input cells), the updated parameters, then (``scalars``) its
    scalars (t, the lr in force, ...). ``params``/``grads`` hold the parameters before the step
    and the gradients the update reads (clipped, with clipping)."""
    step, kind = sheet.step, optimizer.kind
    state_keys = rule.state_keys(optimizer)
    before = trace_before(step, captured) if state_keys else None
    previous: dict[tuple[str, str], Cells] = {}
    if before is not None:
        for key, state_symbol in state_keys:
            for name, _, symbol in table:
                previous[(key, name)] = sheet.param_inputs(
                    f"{state_symbol}[{symbol}] after step {step - 1} (state before this step)",
                    before.value(f"{kind}.{key}.{name}"),
                    name,
                )
    # where each new state block will sit: the update reads the new state, laid out before it
    slots: dict[tuple[str, str], Cells] = {}
    top = sheet.top
    for key, _ in state_keys:
        for name, _, _ in table:
            slots[(key, name)], top = sheet.param_slot(top, params[name])
    built: dict[str, list[fx.UpdateFormulas]] = {}
    for name, _, _ in table:
        size = _size(name, table)
        param_refs, grad_refs = flat_refs(params[name], size), flat_refs(grads[name], size)
        before_refs = {
            key: flat_refs(previous[(key, name)], size) if (key, name) in previous else None
            for key, _ in state_keys
        }
        slot_refs = {key: flat_refs(slots[(key, name)], size) for key, _ in state_keys}
        built[name] = [
            rule.build(
                param_refs[flat],
                grad_refs[flat],
                hyper_names,
                {key: None if refs is None else refs[flat] for key, refs in before_refs.items()},
                str(step),
                {key: refs[flat] for key, refs in slot_refs.items()},
            )
            for flat in range(size)
        ]
    for key, _ in state_keys:
        for name, _, _ in table:
            block = sheet.param_computed(
                f"{kind}.{key}.{name}",
                f"{kind}'s {key} after this step",
                "state",
                name,
                params[name],
                lambda flat, key=key, name=name: built[name][flat].state[key],
            )
            assert block.ref(0) == slots[(key, name)].ref(0)
    for name, _, symbol in table:
        sheet.param_computed(
            f"{name}_next",
            sheet.next_title(symbol, rule, not state_keys and kind == "sgd"),
            "update",
            name,
            params[name],
            lambda flat, name=name: built[name][flat].next,
        )
    if not scalars:
        return
    for key, body in rule.scalars(hyper_names, str(step)):
        sheet.computed(
            f"{kind}.{key}",
            f"{body}  ({kind}'s {key} at this step)",
            "state",
            {(0, 0): body},
            (1, 1),
            [key],
            [key],
        )


def check_complete(grid: Grid, hand: StepTrace, step: int) -> None:
    """Every term of the hand trace has its block (a term the sheet cannot compute is an error,
    not a silent gap); the diagnostics (norms, fractions) live on the Trace sheet only."""
    laid_out = {term for (_, term, _) in grid.checks.values()}
    missing = [term.name for term in hand if term.phase != "diagnostic" and term.name not in laid_out]
    if missing:
        raise SpecError(
            "workbook", f"the live walkthrough of step {step} has no formulas for {', '.join(missing)}"
        )
