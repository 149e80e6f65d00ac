"""Declarative specs of a network, its loss, optimizer, data and training schedule.

No math and no torch here: a spec is what both sides are built from, and validation lives here so
that every bad value is refused with a message naming its field (``SpecError("lr", ...)``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "identity")
MODES = ("online", "batch", "minibatch")
ORDERS = ("fixed", "shuffle")
DTYPES = ("float64", "float32")


class SpecError(ValueError):
    """Bad input: ``field`` names what was wrong, the message says what was expected."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- small validators shared by every spec and by the CLI -----------------------------------


def require_int(field_name: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SpecError(field_name, f"expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(field_name, f"expected an integer >= {minimum}, got {value}")
    return int(value)


def require_float(
    field_name: str,
    value: object,
    *,
    positive: bool = False,
    non_negative: bool = False,
    below: float | None = None,
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise SpecError(field_name, f"expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise SpecError(field_name, f"expected a finite number, got {number}")
    if positive and number <= 0:
        raise SpecError(field_name, f"expected a number > 0, got {number:g}")
    if non_negative and number < 0:
        raise SpecError(field_name, f"expected a number >= 0, got {number:g}")
    if below is not None and number >= below:
        raise SpecError(field_name, f"expected a number < {below:g}, got {number:g}")
    return number


def require_choice(field_name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise SpecError(field_name, f"expected one of {', '.join(choices)}; got {value!r}")
    return str(value)


# --- layers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dense:
    """``z = W x + b`` with ``W`` of shape (out, in), as ``torch.nn.Linear``.

    ``fold_bias=True`` computes ``z = W̃ [x; 1]`` with ``W̃ = [W | b]`` (the textbook's bias
    folded into the matrix); ``W̃[:, :-1]`` is torch's ``weight`` and ``W̃[:, -1]`` its ``bias``.
    """

    in_features: int
    out_features: int
    bias: bool = True
    fold_bias: bool = False

    prefix = "dense"

    def __post_init__(self) -> None:
        require_int("in_features", self.in_features, 1)
        require_int("out_features", self.out_features, 1)
        if self.fold_bias and not self.bias:
            raise SpecError("fold_bias", "a folded bias needs bias=True")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if input_shape != (self.in_features,):
            raise SpecError(
                "in_features",
                f"expected an input of {self.in_features} features, got shape {input_shape}",
            )
        return (self.out_features,)


@dataclass(frozen=True)
class Activation:
    """An element-wise activation; it belongs to the layer before it (its terms are ``<layer>.a``)."""

    kind: str
    slope: float = 0.01

    def __post_init__(self) -> None:
        require_choice("activation", self.kind, ACTIVATIONS)
        require_float("slope", self.slope)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape


@dataclass(frozen=True)
class Stage:
    """One layer of a network with its stable name: ``dense1``; an activation takes its owner's."""

    name: str
    layer: object
    k: int  # 1-based index among the layers of the same kind, as printed in symbols (W⁽ᵏ⁾)


@dataclass(frozen=True)
class Network:
    """A stack of layers applied in order to an input of ``input_shape`` (per sample).

    ``input_shape`` defaults to the first Dense's ``(in_features,)``. An Activation follows the
    layer it belongs to; two activations in a row, or one first, are refused.
    """

    layers: tuple
    input_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.layers:
            raise SpecError("layers", "a network needs at least one layer")
        if self.input_shape is None:
            first = self.layers[0]
            if not isinstance(first, Dense):
                raise SpecError("input_shape", "required when the first layer is not Dense")
            object.__setattr__(self, "input_shape", (first.in_features,))
        shape = tuple(self.input_shape)
        previous: object = None
        for index, layer in enumerate(self.layers):
            if isinstance(layer, Activation) and (previous is None or isinstance(previous, Activation)):
                raise SpecError(f"layers[{index}]", "an activation must follow a non-activation layer")
            try:
                shape = layer.output_shape(shape)
            except SpecError as error:
                raise SpecError(f"layers[{index}].{error.field}", error.message) from None
            previous = layer

    def stages(self) -> list[Stage]:
        counts: dict[str, int] = {}
        result: list[Stage] = []
        for layer in self.layers:
            if isinstance(layer, Activation):
                owner = result[-1]
                result.append(Stage(owner.name, layer, owner.k))
                continue
            prefix = layer.prefix  # a class attribute; a UserLayer's own field
            counts[prefix] = counts.get(prefix, 0) + 1
            result.append(Stage(f"{prefix}{counts[prefix]}", layer, counts[prefix]))
        return result

    @property
    def output_shape(self) -> tuple[int, ...]:
        shape = tuple(self.input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    @property
    def dense_layers(self) -> list[Dense]:
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    @classmethod
    def mlp(
        cls,
        sizes: Sequence[int],
        activation: str = "sigmoid",
        output_activation: str = "sigmoid",
        *,
        slope: float = 0.01,
        bias: bool = True,
        fold_bias: bool = False,
    ) -> Network:
        if len(sizes) < 2:
            raise SpecError("sizes", f"expected at least two sizes (in, out), got {list(sizes)}")
        for size in sizes:
            require_int("sizes", size, 1)
        layers: list[object] = []
        for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            last = index == len(sizes) - 2
            layers.append(Dense(n_in, n_out, bias=bias, fold_bias=fold_bias))
            layers.append(Activation(output_activation if last else activation, slope))
        return cls(tuple(layers))


# --- data and the step schedule ----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Data:
    """Inputs ``x`` (n, *input_shape): (n, in) for a dense net, (n, C, H, W) for images; targets
    ``y`` (n, out) (class indices as one float column of integers for cross-entropy); finite."""

    x: np.ndarray
    y: np.ndarray
    source: str = "built-in"

    def __post_init__(self) -> None:
        for name in ("x", "y"):
            array = getattr(self, name)
            ndim_ok = array.ndim >= 2 if name == "x" else array.ndim == 2
            if not ndim_ok or 0 in array.shape:
                expected = "2-D or more" if name == "x" else "2-D"
                raise SpecError(f"data.{name}", f"expected a non-empty {expected} array, got {array.shape}")
            if not np.all(np.isfinite(array)):
                raise SpecError(f"data.{name}", "expected finite numbers, found NaN or inf")
        if self.x.shape[0] != self.y.shape[0]:
            raise SpecError("data", f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Schedule:
    """Which rows of the data each step sees.

    ``online``: one sample per step, cycling through the data; ``order`` fixed (0, 1, 2, ...) or
    shuffle (a fresh permutation per epoch drawn from ``seed``). ``batch``: every row every step.
    ``minibatch``: ``batch_size`` rows per step, consecutive slices of the (fixed or shuffled)
    order; a short last slice of an epoch is kept, as ``DataLoader(drop_last=False)``.
    """

    mode: str = "online"
    batch_size: int = 1
    order: str = "fixed"
    seed: int = 0

    def __post_init__(self) -> None:
        require_choice("mode", self.mode, MODES)
        require_choice("order", self.order, ORDERS)
        require_int("batch_size", self.batch_size, 1)
        require_int("seed", self.seed, 0)

    def batches(self, n_rows: int, steps: int) -> Batches:
        """Row indices for each of ``steps`` steps (the same sequence feeds both sides), produced
        when a step asks for them: a run of 10⁹ steps starts at once and holds one epoch."""
        return Batches(self, require_int("n_rows", n_rows, 1), require_int("steps", steps, 0))


class Batches(Sequence[np.ndarray]):
    """The rows of step k (``batches[k - 1]``), computed on demand from the schedule.

    Step i (from 0) is slice ``i mod per_epoch`` of epoch ``i // per_epoch``'s order; a shuffled
    order is the epoch's draw of ``default_rng(seed).permutation``, drawn in epoch order, so an
    earlier epoch asked for after a later one replays the draws from the seed."""

    def __init__(self, schedule: Schedule, n_rows: int, steps: int) -> None:
        self.schedule, self.n_rows, self.steps = schedule, n_rows, steps
        self.size = (
            n_rows
            if schedule.mode == "batch"
            else 1
            if schedule.mode == "online"
            else (min(schedule.batch_size, n_rows))
        )
        self.per_epoch = -(-n_rows // self.size)
        self._fixed = np.arange(n_rows)
        self._epoch = -1
        self._order = self._fixed
        self._rng = np.random.default_rng(schedule.seed)
        self._drawing = threading.Lock()  # the two sides ask at once when they run concurrently

    def __len__(self) -> int:
        return self.steps

    def _order_of(self, epoch: int) -> np.ndarray:
        if self.schedule.mode == "batch" or self.schedule.order != "shuffle":
            return self._fixed
        with self._drawing:
            if epoch < self._epoch:
                self._rng, self._epoch = np.random.default_rng(self.schedule.seed), -1
            while self._epoch < epoch:
                self._order, self._epoch = self._rng.permutation(self.n_rows), self._epoch + 1
            return self._order

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.steps))]
        i = int(index) + self.steps if index < 0 else int(index)
        if not 0 <= i < self.steps:
            raise IndexError(f"step {int(index) + 1} of {self.steps}")
        if self.schedule.mode == "batch":
            return self._fixed
        epoch, j = divmod(i, self.per_epoch)
        return self._order_of(epoch)[j * self.size : (j + 1) * self.size]
