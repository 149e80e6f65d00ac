"""The time bands of the recurrent Walkthrough: one column band per time step t = 1..T (band 0
holds h₀ and c₀, band T + 1 the loss), every band with the same rows, so column A's titles and
row labels hold for all of them.

Each band has, top to bottom: m_t and x_t, per layer the forward lines of its cell
(:data:`handgrad.workbook.recurrent_cells.CELL_TABLES`), the head (many-to-many: z_t, ŷ_t, y_t,
ℓ_t); below the forward pass, the backward lines: the head's ∂L/∂ŷ_t, ∂L/∂z_t and ∂L/∂h_t, then per
layer (top first) the cell's backward lines, read right to left. A block of a traced term has
torch's values and |Δ| = |hand − torch| under it; its hand cells are checked against the per-step
term (the rows active at t, in batch order), or a whole-layer term (h_n, c_n, ∂L/∂h₀, ∂L/∂x).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from handgrad.contract.recurrent import HEAD, RecurrentModel
from handgrad.contract.trace import StepTrace
from handgrad.contract.training import Loss
from handgrad.workbook import formulas as fx
from handgrad.workbook.blocks import LEFT, Block
from handgrad.workbook.grid import Grid, address
from handgrad.workbook.recurrent_cells import CELL_TABLES, CellTable, Line, Reads, Slot, plus
from handgrad.workbook.recurrent_head import HeadBands


@dataclass(frozen=True)
class StepData:
    """One walkthrough step's batch: x (N,T,I), y (N,O or N,T,O), lengths (N), the initial states
    (L,N,H) and the row labels, with the hand and torch traces of the step."""

    step: int
    model: RecurrentModel
    loss: Loss
    hand: StepTrace
    torch: StepTrace | None
    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    initial_given: bool
    row_labels: list[str]


def _labels(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{j + 1}" for j in range(count)]


class Bands(HeadBands):
    """Lays out and writes the bands of one walkthrough Grid; ``weights`` are the parameters'
    input blocks (hand names), ``lengths`` the lengths' input block."""

    def __init__(self, grid: Grid, data: StepData, weights: dict[str, Block], lengths: Block) -> None:
        self.grid, self.data, self.weights, self.len_block = grid, data, weights, lengths
        m = data.model
        self.table: CellTable = CELL_TABLES[m.cell]
        self.N, self.T = data.x.shape[0], data.x.shape[1]
        self.L, self.H, self.I, self.O = m.num_layers, m.hidden_size, m.input_size, m.output_size
        self.G = m.gates
        self.many = m.head == "many-to-many"
        self.active = np.arange(self.T)[:, None] < data.lengths[None, :]  # T,N
        self.band_width = max(self.G * self.H, self.I, self.H, self.O, 3)
        self.lines: dict[tuple, Line] = {}

    # -- small helpers --------------------------------------------------------------------------

    def band_left(self, t: int) -> int:
        """Band t = 0 (initial state), 1..T, and T + 1 (the loss band)."""
        return LEFT + t * (self.band_width + 1)

    def set(self, row: int, col: int, body: str, style: str, check: tuple[str, int] | None = None) -> None:
        self.grid.set(row, col, fx.formula(body), style)
        if check is not None:
            self.grid.check(row, col, self.data.step, check[0], check[1])

    def torch_value(self, name: str) -> np.ndarray | None:
        torch = self.data.torch
        if torch is None or name not in torch:
            return None
        return np.asarray(torch.value(name), dtype=float)

    def torch_source(self, name: str) -> str:
        torch = self.data.torch
        return torch[name].source if torch is not None and name in torch else "—"

    def mask(self, t: int, n: int) -> str:
        return self.b[(("mask",), t)].cell(n, 0)

    # -- layout ---------------------------------------------------------------------------------

    def _line_slot(self, line: Line, layer: int) -> Slot:
        inp = "x_t" if layer == 0 else f"h⁽{layer}⁾_t"
        above = "the head" if layer == self.L - 1 else f"layer {layer + 2}'s ∂L/∂x_t"
        cols = {"GH": self.G * self.H, "H": self.H, "in": self.I if layer == 0 else self.H}[line.width]
        self.lines[(line.key, layer)] = line
        title = line.title.format(l=layer + 1, inp=inp, above=above)
        return Slot((line.key, layer), title, cols, line.phase, line.torch)

    def band_slots(self) -> tuple[list[Slot], list[Slot]]:
        """The forward and backward blocks of a time band, top to bottom."""
        fwd = [
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
            fwd += [self._line_slot(line, layer) for line in self.table.forward]
        head_fwd, head_bwd = self.head_slots()
        fwd += head_fwd
        bwd = head_bwd
        for layer in reversed(range(self.L)):
            bwd += [self._line_slot(line, layer) for line in self.table.backward]
        return fwd, bwd

    def place(self, slots: list[Slot], top: int) -> tuple[dict[tuple, int], int]:
        offsets: dict[tuple, int] = {}
        for slot in slots:
            offsets[slot.key] = top
            top += slot.height(self.N)
        return offsets, top

    def column_a(self, slot: Slot, row: int) -> None:
        grid = self.grid
        grid.text(row, 1, slot.title, slot.phase if slot.phase != "input" else "header")
        for n in range(self.N):
            grid.text(row + 1 + n, 1, self.data.row_labels[n], "header")
        if slot.torch:
            grid.text(row + 1 + self.N, 1, "torch's values (reference named in the band)", "torch")
            grid.text(row + 2 + 2 * self.N, 1, "|Δ| = |hand − torch|", "delta")

    def col_labels(self, key: tuple) -> list[str]:
        if len(key) == 2:
            return self.table.column_labels(self.lines[key], self.H, self.I, key[1])
        kind = key[0]
        if kind == "x":
            return _labels("x", self.I)
        if kind == "mask":
            return ["m"]
        if kind in ("z", "yhat", "y", "ell", "dyhat", "dz"):
            return _labels("o", self.O)
        return _labels("u", self.H)

    def header(self, key: tuple, t: int) -> Block:
        """The block of (key, band t), its column labels written on its title row."""
        block = self.b[(key, t)]
        for j, label in enumerate(self.col_labels(key)):
            self.grid.text(block.top - 1, block.left + j, label, "header")
        return block

    # -- write ----------------------------------------------------------------------------------

    def write(self, top: int) -> int:
        """Lay out and write every band from row ``top``; returns the first row below them."""
        grid, T = self.grid, self.T
        grid.text(top, 1, "Forward: one band per time step →", "title")
        for t in range(T + 2):
            label = "t = 0 (initial state)" if t == 0 else ("loss" if t == T + 1 else f"t = {t}")
            grid.text(top, self.band_left(t), label, "title")
        top += 1
        fwd, bwd = self.band_slots()
        lfwd, lbwd = self.loss_slots()
        # the loss band's own blocks get rows of their own: column A labels one row for every
        # band, so no two kinds of block share a row
        fwd_at, fwd_end = self.place(fwd, top)
        lfwd_at, lfwd_end = self.place(lfwd, fwd_end)
        self.loss_row = max(fwd_end, lfwd_end)  # L and n, in the loss band
        back_top = self.loss_row + 6
        grid.text(back_top - 1, 1, "Backward: read right to left ←", "title")
        lbwd_at, lbwd_end = self.place(lbwd, back_top)
        bwd_at, bwd_end = self.place(bwd, lbwd_end)
        band_at = {**fwd_at, **bwd_at}
        loss_at = {**lfwd_at, **lbwd_at}
        slots = {s.key: s for s in fwd + bwd}
        loss_slots = {s.key: s for s in lfwd + lbwd}
        for slot in fwd + bwd:
            self.column_a(slot, band_at[slot.key])
        for slot in lfwd + lbwd:
            if slot.key not in slots:
                self.column_a(slot, loss_at[slot.key])

        self.b: dict[tuple, Block] = {}  # (slot key, t) -> hand block
        states = {(state, layer) for state in self.table.states for layer in range(self.L)}
        for t in range(T + 2):
            left = self.band_left(t)
            for key, row in band_at.items():
                if 1 <= t <= T or (t == 0 and key in states):
                    self.b[(key, t)] = Block(row + 1, left, self.N, slots[key].cols)
            if t == T + 1:
                for key, row in loss_at.items():
                    self.b[(key, t)] = Block(row + 1, left, self.N, loss_slots[key].cols)
            for col in range(left, left + self.band_width):
                grid.widths[col] = 11

        self.initial_band()
        for t in range(1, T + 1):
            self.forward_band(t)
        self.loss_band()
        for t in range(T, 0, -1):
            self.backward_band(t)
        return max(bwd_end, lbwd_end) + 1

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
        values = self.torch_value(name)
        if values is not None:
            self.torch_cols(
                key, t, values.reshape(len(active), -1), list(active), c0, self.torch_source(name)
            )

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

        def flat(n: int, j: int) -> int:
            return index(n, j) if index is not None else n * block.cols + j

        for (n, j), body in cells.items():
            self.set(block.top + n, block.left + j, body, phase, (name, flat(n, j)))
        values = self.torch_value(name)
        if values is not None:
            flat_values = values.reshape(-1)
            table = np.zeros((self.N, block.cols))
            for n, j in cells:
                table[n, j] = flat_values[flat(n, j)]
            self.torch_cols(key, t, table, list(range(self.N)), 0, self.torch_source(name))

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

    # -- the cell's lines ------------------------------------------------------------------------

    def reads(self, layer: int, t: int) -> Reads:
        prefix = self.data.model.layer_name(layer)
        top_layer = layer == self.L - 1

        def arriving(n: int, j: int) -> str:
            parts = []
            if top_layer and self.many:
                parts.append(self.b[(("dxhead",), t)].cell(n, j))
            elif not top_layer:
                parts.append(self.b[(("dx", layer + 1), t)].cell(n, j))
            if t < self.T:
                parts.append(self.b[(("carry_h", layer), t + 1)].cell(n, j))
            elif top_layer and not self.many:
                parts.append(self.b[(("dhn",), self.T + 1)].cell(n, j))
            return plus(parts)

        source = self.b[(("x",), t)] if layer == 0 else self.b[(("h", layer - 1), t)]
        weights = {short: self.weights[f"{prefix}.{short}"] for short in ("W_ih", "W_hh", "b_ih", "b_hh")}
        return Reads(
            self.H,
            t,
            self.T,
            lambda key, band: self.b[((key, layer), band)],
            self.b[(("mask",), t)],
            source,
            weights,
            arriving,
        )

    def write_line(self, line: Line, layer: int, t: int) -> None:
        """Line ``line`` of layer ``layer`` in band t: its formulas and the terms they compute."""
        key = (line.key, layer)
        block = self.header(key, t)
        reads = self.reads(layer, t)
        cells = {(n, k): line.formula(reads, n, k) for n in range(self.N) for k in range(block.cols)}
        prefix = self.data.model.layer_name(layer)
        initial = line.check == "initial" and t == 1 and self.data.initial_given
        if line.check == "step":
            last = f"{prefix}.{line.last}" if line.last is not None and t == self.T else None
            for q, term in enumerate(line.terms):
                name = f"{prefix}.{term.format(t=t)}"
                columns = (q * self.H, q * self.H + block.cols // len(line.terms))
                self.step_term(key, t, name, cells, columns, line.phase, all_rows_term=last)
        elif line.check == "whole":
            cols, model = block.cols, self.data.model

            def index(n: int, i: int) -> int:
                if model.batch_first:
                    return (n * self.T + (t - 1)) * cols + i
                return ((t - 1) * self.N + n) * cols + i

            self.whole_term(key, t, f"{prefix}.{line.terms[0]}", cells, line.phase, index=index)
        elif initial:
            self.whole_term(key, t, f"{prefix}.{line.terms[0]}", cells, line.phase)
        else:
            for (n, k), body in cells.items():
                self.set(block.top + n, block.left + k, body, line.phase)

    # -- the bands ---------------------------------------------------------------------------------

    def initial_band(self) -> None:
        for layer in range(self.L):
            for state in self.table.states:
                block = self.header((state, layer), 0)
                values = (self.data.h0 if state == "h" else self.data.c0)[layer]
                self.grid.block(block.top, block.left, values, "input")
                self.grid.text(block.top - 1, block.left + block.cols, f"{state}₀", "note")

    def forward_band(self, t: int) -> None:
        mask = self.header(("mask",), t)
        for n in range(self.N):
            self.set(mask.top + n, mask.left, f"IF({t}<={self.len_block.cell(n, 0, True)},1,0)", "forward")
        xb = self.header(("x",), t)
        self.grid.block(xb.top, xb.left, self.data.x[:, t - 1, :], "input")
        for layer in range(self.L):
            for line in self.table.forward:
                self.write_line(line, layer, t)
        if self.many:
            self.head_forward(t, self.b[(("h", self.L - 1), t)], f"[{t}]")

    def backward_band(self, t: int) -> None:
        if self.many:
            self.head_backward(t, f"[{t}]")
            self.head_dx(t, ("dxhead",), f"{HEAD}.dL_dx[{t}]")
        for layer in reversed(range(self.L)):
            for line in self.table.backward:
                self.write_line(line, layer, t)
