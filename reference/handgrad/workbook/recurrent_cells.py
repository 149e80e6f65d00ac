r"""The recurrent cells as formula tables: for each cell kind, the labelled lines of one time step
(hand/recurrent.py's ``_rnn_step`` … ``_lstm_step_back``, line by line), forward then backward
through time, each a block of every band of the recurrent Walkthrough.

A :class:`Line` is (block key, column A's title, width, phase, the terms it checks, the formula of
one cell). The formula reads the band through :class:`Reads`: this layer's blocks of band t (or
t ± 1), the mask m_t, the layer's input, its weights, and what arrives at ∂L/∂h_t. The sheet writer
(:mod:`handgrad.workbook.recurrent_bands`) lays every line out in every band; nothing here knows
rows or columns.

Forward, one step (σ the logistic sigmoid; a row past its length keeps its state, IF(m, new, old)):

    rnn   z = W_ih x + b_ih + W_hh h + b_hh         h' = tanh(z)  or  relu(z)
    lstm  z = W_ih x + b_ih + W_hh h + b_hh  (blocks i | f | g | o)
          i, f, o = σ(z), g = tanh(z);   c' = f ⊙ c + i ⊙ g;   h' = o ⊙ tanh(c')
    gru   z_r, z_z as the rnn;   z_n = W_in x + b_in + r ⊙ (W_hn h + b_hn)
          r = σ(z_r), z = σ(z_z), n = tanh(z_n);   h' = (1 − z) ⊙ n + z ⊙ h

Backward through time: the equations are the titles of the backward lines below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from handgrad.contract import names as naming
from handgrad.workbook import formulas as fx
from handgrad.workbook.blocks import Block
from handgrad.workbook.grid import area


def row_of(block: Block, i: int, *, absolute: bool = False) -> str:
    """Row ``i`` of a block, every column."""
    return area(block.top + i, block.left, 1, block.cols, absolute=absolute)


def column_of(block: Block, j: int) -> str:
    """Column ``j`` of a block, every row."""
    return area(block.top, block.left + j, block.rows, 1)


def plus(parts: list[str]) -> str:
    """``a+b+…`` of the parts that are not 0 (``0`` when none is left)."""
    kept = [p for p in parts if p and p != "0"]
    return "+".join(kept) if kept else "0"


class Reads:
    """What one layer's formulas of band t read: its blocks (``block(key, t)``), the mask, its
    input (x_t or the layer below's h_t), its weights, and the ∂L/∂h_t arriving from above."""

    def __init__(
        self,
        H: int,
        t: int,
        T: int,
        block: Callable[[str, int], Block],
        mask: Block,
        source: Block,
        weights: Mapping[str, Block],
        arriving: Callable[[int, int], str],
    ) -> None:
        self.H, self.t, self.T = H, t, T
        self.block = block
        self.mask_block, self.source, self.weights = mask, source, weights
        self.arriving = arriving

    def at(self, key: str, n: int, j: int, dt: int = 0) -> str:
        """Cell (n, j) of this layer's block ``key`` in band t + dt."""
        return self.block(key, self.t + dt).cell(n, j)

    def gate(self, n: int, q: int, j: int) -> str:
        """Unit j of gate q (in the cell's gate order) of row n."""
        return self.at("gates", n, q * self.H + j)

    def running(self, n: int, new: str, old: str) -> str:
        """``new`` while sequence n runs at t, else ``old`` (its state past its length)."""
        return f"IF({self.mask_block.cell(n, 0)}=1,{new},{old})"

    def carried(self, key: str, n: int, j: int) -> str:
        """What band t + 1 carries back in ``key`` (0 in the last band)."""
        return "0" if self.t == self.T else self.at(key, n, j, dt=1)

    def bias(self, name: str, k: int) -> str:
        return self.weights[name].cell(k, 0, absolute=True)

    def weight(self, name: str, k: int, j: int) -> str:
        return self.weights[name].cell(k, j, absolute=True)

    def wx(self, n: int, k: int) -> str:
        """(W_ih x_t)_k of row n."""
        return f"SUMPRODUCT({row_of(self.source, n)},{row_of(self.weights['W_ih'], k, absolute=True)})"

    def wh(self, n: int, k: int) -> str:
        """(W_hh h_(t−1))_k of row n."""
        h_prev = self.block("h", self.t - 1)
        return f"SUMPRODUCT({row_of(h_prev, n)},{row_of(self.weights['W_hh'], k, absolute=True)})"


Formula = Callable[[Reads, int, int], str]  # (reads, row n, column k of the block) -> body


@dataclass(frozen=True)
class Line:
    """One labelled line of a cell's step: a block in every time band t = 1..T.

    ``title`` is column A's text (``{l}``: the layer's number, ``{inp}``: its input, ``{above}``:
    where ∂L/∂h_t arrives from); ``width``: ``"GH"`` (the stacked gates), ``"H"`` or ``"in"``
    (the layer's input size); ``check``: ``"none"`` (a helper the checked blocks read), ``"step"``
    (per-step terms ``terms``, one per H columns, holding the rows active at t), ``"initial"``
    (the term ``terms[0]`` in band 1 when h₀ is given: ∂L/∂h₀), ``"whole"`` (every row of every
    band is an element of ``terms[0]``: ∂L/∂x); ``last``: the whole-layer term the inactive rows of
    the last band check (h_n, c_n)."""

    key: str
    title: str
    width: str
    phase: str
    formula: Formula
    check: str = "none"
    terms: tuple[str, ...] = ()
    last: str | None = None

    @property
    def torch(self) -> bool:
        """Whether torch's values and |Δ| sit under the block (a traced term)."""
        return self.check != "none"


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


@dataclass(frozen=True)
class CellTable:
    """A cell kind's lines, forward and backward, its initial states (h₀, c₀), and where the
    gradient of the hidden side (W_hh h + b_hh) of stacked column k is: (block key, column)."""

    kind: str
    forward: tuple[Line, ...]
    backward: tuple[Line, ...]
    states: tuple[str, ...]
    hidden_grad: Callable[[int, int], tuple[str, int]]

    def column_labels(self, line: Line, H: int, inputs: int, layer: int) -> list[str]:
        """Gate units (i1 … o3; z1 … for the rnn), the inputs x1 … (layer 1's ∂L/∂x), else units."""
        if line.width == "GH":
            gates = naming.GATES[self.kind] if len(naming.GATES[self.kind]) > 1 else ("z",)
            return [f"{g}{u + 1}" for g in gates for u in range(H)]
        if line.width == "in" and layer == 0:
            return [f"x{j + 1}" for j in range(inputs)]
        return [f"u{j + 1}" for j in range(H)]


# --- the lines every cell shares ------------------------------------------------------------------


def _linear(r: Reads, n: int, k: int) -> str:
    """z_k = (W_ih x)_k + b_ih,k + (W_hh h)_k + b_hh,k."""
    return f"{r.wx(n, k)}+{r.bias('b_ih', k)}+{r.wh(n, k)}+{r.bias('b_hh', k)}"


def _gates(functions: tuple[str, ...]) -> Formula:
    """σ or tanh of each gate's block of z."""

    def formula(r: Reads, n: int, k: int) -> str:
        z = r.at("pre", n, k)
        return fx.sigmoid(z) if functions[k // r.H] == "σ" else f"TANH({z})"

    return formula


def _by_gate(*bodies: Formula) -> Formula:
    """One formula per gate block of the stacked columns (k = q·H + j -> bodies[q](r, n, j))."""

    def formula(r: Reads, n: int, k: int) -> str:
        q, j = divmod(k, r.H)
        return r.running(n, bodies[q](r, n, j), "0")

    return formula


def _stacked_dot(r: Reads, n: int, j: int, weight: str, grad: Callable[[int], str]) -> str:
    return fx.dot([(grad(k), r.weight(weight, k, j)) for k in range(r.weights[weight].rows)])


DH = Line(
    "dh",
    "layer {l}: ∂L/∂h_t = from {above} + carried from t+1",
    "H",
    "backward",
    lambda r, n, j: r.arriving(n, j),
    "step",
    ("dL_dh[{t}]",),
)
DX = Line(
    "dx",
    "layer {l}: ∂L/∂{inp} = ∂L/∂z · W_ih",
    "in",
    "backward",
    lambda r, n, i: _stacked_dot(r, n, i, "W_ih", lambda k: r.at("da", n, k)),
    "whole",
    ("dL_dx",),
)


def _carry_h(title_extra: str, hidden: Callable[[Reads, int, int], str], gate_term: Formula | None) -> Line:
    """∂L/∂h_(t−1) = [gate_term +] ∂L/∂(W_hh h) · W_hh while the row runs, else ∂L/∂h_t."""

    def formula(r: Reads, n: int, j: int) -> str:
        matmul = _stacked_dot(r, n, j, "W_hh", lambda k: hidden(r, n, k))
        if gate_term is not None:
            matmul = f"{gate_term(r, n, j)}+{matmul}"
        return r.running(n, matmul, r.at("dh", n, j))

    return Line(
        "carry_h",
        f"layer {{l}}: carried to t−1: {title_extra}∂L/∂z · W_hh  (∂L/∂h_t past the end; in band 1: ∂L/∂h₀)",
        "H",
        "backward",
        formula,
        "initial",
        ("dL_dh0",),
    )


def _same_block(r: Reads, n: int, k: int) -> str:
    return r.at("da", n, k)


# --- rnn (tanh, relu) -----------------------------------------------------------------------------


def _rnn(kind: str) -> CellTable:
    relu = kind == "rnn_relu"
    act = "relu" if relu else "tanh"

    def h(r: Reads, n: int, j: int) -> str:
        z = r.at("pre", n, j)
        return r.running(n, f"MAX({z},0)" if relu else f"TANH({z})", r.at("h", n, j, dt=-1))

    def dz(r: Reads, n: int, j: int) -> str:
        if relu:  # relu′(0) = 0: h > 0 ⇔ z > 0
            return f"IF({r.at('h', n, j)}>0,{r.at('dh', n, j)},0)"
        return f"{r.at('dh', n, j)}*(1-{r.at('h', n, j)}*{r.at('h', n, j)})"

    equation = "∂L/∂z = ∂L/∂h ⊙ [z > 0]  (relu′(0) = 0)" if relu else "∂L/∂z = ∂L/∂h ⊙ (1 − h²)"
    forward = (
        Line("pre", "layer {l}: z = W_ih {inp} + b_ih + W_hh h_(t−1) + b_hh", "GH", "forward", _linear),
        Line(
            "h", f"layer {{l}}: h_t = {act}(z)  (h_(t−1) past the end)", "H", "forward", h, "step",
            ("h[{t}]",), "h_n",
        ),
    )  # fmt: skip
    backward = (
        DH,
        Line("da", f"layer {{l}}: {equation}  (0 past the end)", "GH", "backward", _by_gate(dz), "step",
             ("dL_dz[{t}]",)),
        _carry_h("", _same_block, None),
        DX,
    )  # fmt: skip
    return CellTable(kind, forward, backward, ("h",), lambda k, H: ("da", k))


# --- lstm -----------------------------------------------------------------------------------------


def _lstm() -> CellTable:
    i_, f_, g_, o_ = 0, 1, 2, 3

    def c(r: Reads, n: int, j: int) -> str:
        c_prev = r.at("c", n, j, dt=-1)
        return r.running(n, f"{r.gate(n, f_, j)}*{c_prev}+{r.gate(n, i_, j)}*{r.gate(n, g_, j)}", c_prev)

    def h(r: Reads, n: int, j: int) -> str:
        return r.running(n, f"{r.gate(n, o_, j)}*TANH({r.at('c', n, j)})", r.at("h", n, j, dt=-1))

    def dc(r: Reads, n: int, j: int) -> str:
        carried = r.carried("carry_c", n, j)
        new = f"{r.at('dh', n, j)}*{r.gate(n, o_, j)}*(1-TANH({r.at('c', n, j)})^2)"
        return r.running(n, plus([carried, new]), carried)

    def dz_i(r: Reads, n: int, j: int) -> str:
        i = r.gate(n, i_, j)
        return f"{r.at('dc', n, j)}*{r.gate(n, g_, j)}*{i}*(1-{i})"

    def dz_f(r: Reads, n: int, j: int) -> str:
        f = r.gate(n, f_, j)
        return f"{r.at('dc', n, j)}*{r.at('c', n, j, dt=-1)}*{f}*(1-{f})"

    def dz_g(r: Reads, n: int, j: int) -> str:
        g = r.gate(n, g_, j)
        return f"{r.at('dc', n, j)}*{r.gate(n, i_, j)}*(1-{g}*{g})"

    def dz_o(r: Reads, n: int, j: int) -> str:
        o = r.gate(n, o_, j)
        return f"{r.at('dh', n, j)}*TANH({r.at('c', n, j)})*{o}*(1-{o})"

    def carry_c(r: Reads, n: int, j: int) -> str:
        d_c = r.at("dc", n, j)
        return r.running(n, f"{d_c}*{r.gate(n, f_, j)}", d_c)

    forward = (
        Line("pre", "layer {l}: z = W_ih {inp} + b_ih + W_hh h_(t−1) + b_hh (blocks i | f | g | o)", "GH",
             "forward", _linear),
        Line("gates", "layer {l}: i, f, o = σ(z), g = tanh(z)", "GH", "forward",
             _gates(("σ", "σ", "tanh", "σ")), "step", ("i[{t}]", "f[{t}]", "g[{t}]", "o[{t}]")),
        Line("c", "layer {l}: c_t = f ⊙ c_(t−1) + i ⊙ g  (c_(t−1) past the end)", "H", "forward", c, "step",
             ("c[{t}]",), "c_n"),
        Line("h", "layer {l}: h_t = o ⊙ tanh(c_t)  (h_(t−1) past the end)", "H", "forward", h, "step",
             ("h[{t}]",), "h_n"),
    )  # fmt: skip
    backward = (
        DH,
        Line("dc", "layer {l}: ∂L/∂c_t = carried + ∂L/∂h_t ⊙ o ⊙ (1 − tanh²c_t)", "H", "backward", dc, "step",
             ("dL_dc[{t}]",)),
        Line("da",
             "layer {l}: ∂L/∂z_i = ∂L/∂c ⊙ g ⊙ i(1−i), z_f: ∂L/∂c ⊙ c_(t−1) ⊙ f(1−f), "
             "z_g: ∂L/∂c ⊙ i ⊙ (1−g²), z_o: ∂L/∂h ⊙ tanh c ⊙ o(1−o)  (0 past the end)",
             "GH", "backward", _by_gate(dz_i, dz_f, dz_g, dz_o), "step",
             ("dL_dz_i[{t}]", "dL_dz_f[{t}]", "dL_dz_g[{t}]", "dL_dz_o[{t}]")),
        _carry_h("", _same_block, None),
        Line("carry_c", "layer {l}: carried to t−1: ∂L/∂c_t ⊙ f  (in band 1: ∂L/∂c₀)", "H", "backward",
             carry_c, "initial", ("dL_dc0",)),
        DX,
    )  # fmt: skip
    return CellTable("lstm", forward, backward, ("h", "c"), lambda k, H: ("da", k))


# --- gru (torch's reset placement) ----------------------------------------------------------------


def _gru() -> CellTable:
    r_, z_, n_ = 0, 1, 2

    def hh_n(r: Reads, n: int, j: int) -> str:
        k = 2 * r.H + j
        return f"{r.wh(n, k)}+{r.bias('b_hh', k)}"

    def pre(r: Reads, n: int, k: int) -> str:
        if k < 2 * r.H:
            return _linear(r, n, k)
        j = k - 2 * r.H  # z_n = W_in x + b_in + r ⊙ (W_hn h + b_hn)
        return f"{r.wx(n, k)}+{r.bias('b_ih', k)}+{r.gate(n, r_, j)}*{r.at('hhn', n, j)}"

    def h(r: Reads, n: int, j: int) -> str:
        z, new, h_prev = r.gate(n, z_, j), r.gate(n, n_, j), r.at("h", n, j, dt=-1)
        return r.running(n, f"{new}+{z}*({h_prev}-{new})", h_prev)

    def dz_r(r: Reads, n: int, j: int) -> str:
        gate = r.gate(n, r_, j)
        return f"{r.at('da', n, 2 * r.H + j)}*{r.at('hhn', n, j)}*{gate}*(1-{gate})"

    def dz_z(r: Reads, n: int, j: int) -> str:
        z = r.gate(n, z_, j)
        return f"{r.at('dh', n, j)}*({r.at('h', n, j, dt=-1)}-{r.gate(n, n_, j)})*{z}*(1-{z})"

    def dz_n(r: Reads, n: int, j: int) -> str:
        new = r.gate(n, n_, j)
        return f"{r.at('dh', n, j)}*(1-{r.gate(n, z_, j)})*(1-{new}*{new})"

    def d_hh_n(r: Reads, n: int, j: int) -> str:
        return f"{r.at('da', n, 2 * r.H + j)}*{r.gate(n, r_, j)}"

    def hidden(r: Reads, n: int, k: int) -> str:
        key, col = hidden_grad(k, r.H)
        return r.at(key, n, col)

    def hidden_grad(k: int, H: int) -> tuple[str, int]:
        return ("dghn", k - 2 * H) if k >= 2 * H else ("da", k)

    forward = (
        Line("hhn", "layer {l}: W_hn h_(t−1) + b_hn (the GRU's reset acts on this)", "H", "forward", hh_n),
        Line("pre",
             "layer {l}: z_r, z_z = W_i· {inp} + b_i· + W_h· h_(t−1) + b_h·;  "
             "z_n = W_in {inp} + b_in + r ⊙ (W_hn h + b_hn)",
             "GH", "forward", pre),
        Line("gates", "layer {l}: r = σ(z_r), z = σ(z_z), n = tanh(z_n)", "GH", "forward",
             _gates(("σ", "σ", "tanh")), "step", ("r[{t}]", "z[{t}]", "n[{t}]")),
        Line("h", "layer {l}: h_t = (1 − z) ⊙ n + z ⊙ h_(t−1)  (h_(t−1) past the end)", "H", "forward", h,
             "step", ("h[{t}]",), "h_n"),
    )  # fmt: skip
    backward = (
        DH,
        Line("da",
             "layer {l}: ∂L/∂z_n = ∂L/∂h ⊙ (1−z)(1−n²), z_z: ∂L/∂h ⊙ (h_(t−1) − n) ⊙ z(1−z), "
             "z_r: ∂L/∂z_n ⊙ (W_hn h + b_hn) ⊙ r(1−r)  (0 past the end)",
             "GH", "backward", _by_gate(dz_r, dz_z, dz_n), "step",
             ("dL_dz_r[{t}]", "dL_dz_z[{t}]", "dL_dz_n[{t}]")),
        Line("dghn", "layer {l}: ∂L/∂(W_hn h + b_hn) = ∂L/∂z_n ⊙ r", "H", "backward", d_hh_n),
        _carry_h("∂L/∂h_t ⊙ z + ", hidden, lambda r, n, j: f"{r.at('dh', n, j)}*{r.gate(n, z_, j)}"),
        DX,
    )  # fmt: skip
    return CellTable("gru", forward, backward, ("h",), hidden_grad)


CELL_TABLES: dict[str, CellTable] = {
    "rnn_tanh": _rnn("rnn_tanh"),
    "rnn_relu": _rnn("rnn_relu"),
    "lstm": _lstm(),
    "gru": _gru(),
}
