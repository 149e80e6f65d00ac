"""The recurrent family's model spec: a stack of RNN/GRU/LSTM layers and a Dense head, its data
(padded sequences with lengths), each step's batch, and the parameter tables both sides name.

The derivations are in handgrad.hand.recurrent_model and manual/recurrent.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from handgrad.contract import names as naming
from handgrad.contract.spec import ACTIVATIONS, SpecError, require_choice, require_int
from handgrad.contract.training import Loss

HEADS = ("many-to-one", "many-to-many")
# the command line's names for the cells -> handgrad.hand.recurrent's names (torch's modes)
CELL_NAMES = {"rnn": "rnn_tanh", "rnn-relu": "rnn_relu", "gru": "gru", "lstm": "lstm"}
HEAD = "dense1"
SHORT_NAMES = ("W_ih", "W_hh", "b_ih", "b_hh")  # <rec><l>.<short> <-> torch's <base>_l{l-1}


@dataclass(frozen=True)
class RecurrentModel:
    """A stack of ``num_layers`` recurrent layers of one ``cell`` and a Dense head.

    ``cell``: ``rnn_tanh``, ``rnn_relu``, ``gru``, ``lstm`` (the command line's ``rnn``,
    ``rnn-relu`` are accepted); ``head``: ``many-to-one`` (the last state → Dense) or
    ``many-to-many`` (a Dense at every step); ``output_activation`` follows the head's Dense;
    ``batch_first``: the layout of x and of the output, as torch's flag (the data is the same).
    """

    cell: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    output_size: int = 1
    head: str = "many-to-one"
    output_activation: str = "sigmoid"
    batch_first: bool = False
    slope: float = 0.01

    def __post_init__(self) -> None:
        cell = CELL_NAMES.get(self.cell, self.cell)
        require_choice("cell", cell, naming.CELLS)
        object.__setattr__(self, "cell", cell)
        require_int("input_size", self.input_size, 1)
        require_int("hidden", self.hidden_size, 1)
        require_int("layers", self.num_layers, 1)
        require_int("output_size", self.output_size, 1)
        require_choice("head", self.head, HEADS)
        require_choice("output_activation", self.output_activation, ACTIVATIONS)

    @property
    def prefix(self) -> str:
        return naming.PREFIX[self.cell]

    @property
    def gates(self) -> int:
        return len(naming.GATES[self.cell])

    def layer_name(self, layer: int) -> str:
        """``lstm1`` for layer 0."""
        return naming.term_prefix(self.cell, layer)


def param_table(model: RecurrentModel) -> list[tuple[str, tuple[int, ...], str]]:
    """Every parameter as (hand name, shape, symbol), in the twin's ``parameters()`` order."""
    G, H = model.gates, model.hidden_size
    table: list[tuple[str, tuple[int, ...], str]] = []
    for layer in range(model.num_layers):
        n_in = model.input_size if layer == 0 else H
        shapes = ((G * H, n_in), (G * H, H), (G * H,), (G * H,))
        for short, shape in zip(SHORT_NAMES, shapes, strict=True):
            table.append((f"{model.layer_name(layer)}.{short}", shape, naming.term_symbol(short, layer + 1)))
    table.append((f"{HEAD}.W", (model.output_size, H), "W_y"))
    table.append((f"{HEAD}.b", (model.output_size,), "b_y"))
    return table


def torch_names(model: RecurrentModel) -> dict[str, str]:
    """Hand name → the twin's parameter name (``lstm1.W_ih`` → ``rnn.weight_ih_l0``)."""
    names = {}
    for layer in range(model.num_layers):
        for short, base in zip(SHORT_NAMES, naming.PARAM_NAMES, strict=True):
            names[f"{model.layer_name(layer)}.{short}"] = f"rnn.{base}_l{layer}"
    names[f"{HEAD}.W"] = "head.weight"
    names[f"{HEAD}.b"] = "head.bias"
    return names


@dataclass(frozen=True, eq=False)
class SequenceData:
    """A padded batch of sequences: ``x`` (S, T, I) stored sequence-major whatever the model's
    layout, ``lengths`` (S,) in 1..T, targets ``y`` (S, O) for many-to-one or (S, T, O) for
    many-to-many (values at padded steps are ignored). ``packed``: the lengths reach both sides
    (the twin packs, the hand masks); False only when every length is T (a plain padded batch)."""

    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray
    packed: bool = True
    source: str = "built-in"

    def __post_init__(self) -> None:
        x = np.asarray(self.x, dtype=np.float64)
        if x.ndim != 3 or 0 in x.shape:
            raise SpecError(
                "data.x", f"expected a non-empty (sequences, length, inputs) array, got {x.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise SpecError("data.x", "expected finite numbers, found NaN or inf")
        S, T, _ = x.shape
        lengths = check_lengths(self.lengths, S, T)
        if not self.packed and np.any(lengths != T):
            raise SpecError("lengths", f"unpacked data needs every length equal to {T}")
        y = np.asarray(self.y, dtype=np.float64)
        if y.ndim not in (2, 3) or y.shape[0] != S or (y.ndim == 3 and y.shape[1] != T) or 0 in y.shape:
            raise SpecError(
                "data.y", f"expected ({S}, outputs) or ({S}, {T}, outputs) targets, got shape {y.shape}"
            )
        if not np.all(np.isfinite(y)):
            raise SpecError("data.y", "expected finite numbers, found NaN or inf")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "lengths", lengths)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def steps(self) -> int:
        return int(self.x.shape[1])


def check_lengths(lengths: object, sequences: int, steps: int) -> np.ndarray:
    """``lengths`` as int64 (S,), every one in 1..T, or a SpecError naming ``lengths``."""
    array = np.asarray(lengths)
    if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
        raise SpecError("lengths", f"expected {sequences} integers (one per sequence), got {lengths!r}")
    if array.shape[0] != sequences:
        raise SpecError("lengths", f"expected {sequences} lengths (one per sequence), got {array.shape[0]}")
    bad = [int(v) for v in array if not 1 <= v <= steps]
    if bad:
        raise SpecError("lengths", f"expected every length in 1..{steps} (the padded length), got {bad[0]}")
    return array.astype(np.int64)


def check_targets(model: RecurrentModel, loss: Loss, data: SequenceData) -> str:
    """Refuse data the model and loss cannot take, naming the field; return the loss's target form
    (``value``, or ``index`` / ``probability`` for the class losses: see ``Loss.target_form``)."""
    if data.x.shape[2] != model.input_size:
        raise SpecError("data.x", f"expected {model.input_size} inputs per step, got {data.x.shape[2]}")
    want = 2 if model.head == "many-to-one" else 3
    if data.y.ndim != want:
        shape = "(sequences, outputs)" if want == 2 else "(sequences, length, outputs)"
        raise SpecError("data.y", f"a {model.head} head needs targets {shape}, got shape {data.y.shape}")
    if loss.reduction == "none":
        raise SpecError("reduction", "a recurrent run takes mean or sum (the loss must be one number)")
    valid = data.y if want == 2 else data.y[np.arange(data.steps)[None, :] < data.lengths[:, None]]
    return loss.check_targets(valid, model.output_size)


def recurrent_params(model: RecurrentModel, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The recurrent layers' parameters under torch's names (``weight_ih_l0`` ...)."""
    return {
        f"{base}_l{layer}": params[f"{model.layer_name(layer)}.{short}"]
        for layer in range(model.num_layers)
        for short, base in zip(SHORT_NAMES, naming.PARAM_NAMES, strict=True)
    }


class Batch:
    """What step k feeds both sides: the rows ``rows`` of the data, in the model's layout."""

    def __init__(
        self,
        model: RecurrentModel,
        data: SequenceData,
        rows: np.ndarray,
        h0: np.ndarray | None,
        c0: np.ndarray | None,
    ) -> None:
        x = data.x[rows]  # N,T,I
        self.x = x if model.batch_first else np.ascontiguousarray(x.transpose(1, 0, 2))
        self.lengths = data.lengths[rows] if data.packed else None
        self.active = np.arange(data.steps)[:, None] < data.lengths[rows][None, :]  # T,N
        y = data.y[rows]  # N,O or N,T,O
        self.y = y if y.ndim == 2 else y.transpose(1, 0, 2)  # N,O or T,N,O (time-major)
        self.h0 = None if h0 is None else h0[:, rows]  # L,N,H
        self.c0 = None if c0 is None else c0[:, rows]  # L,N,H


def num_layers_of(params: Mapping[str, np.ndarray]) -> int:
    """How many layers the parameter dict holds (weight_ih_l0, weight_ih_l1, ...)."""
    count = 0
    while f"weight_ih_l{count}" in params:
        count += 1
    if count == 0:
        raise SpecError("params", "expected weight_ih_l0 (torch's names), found none")
    return count
