"""Declarative specs of a network, its loss, optimizer, data and training schedule.

No math and no torch here: a spec is what both sides are built from, and validation lives here so
that every bad value is refused with a message naming its field (``SpecError("lr", ...)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


# --- convolution family (NCHW; per-sample shapes are (C, H, W)) ------------------------------


def _pair(field_name: str, value: object, minimum: int) -> tuple[int, int]:
    """An int or an (h, w) pair, each ``>= minimum``, as torch's ``_pair``."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise SpecError(field_name, f"expected an int or a pair (h, w), got {value!r}")
    return require_int(field_name, items[0], minimum), require_int(field_name, items[1], minimum)


def _image_shape(field_name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise SpecError(field_name, f"expected a (C, H, W) input per sample, got shape {input_shape}")
    c, h, w = input_shape
    return c, h, w


def _window_output(
    hw: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """``H_o = ⌊(H + 2p − d(k−1) − 1)/s⌋ + 1`` per axis; the dilated kernel must fit the padded input."""
    sizes = []
    for axis, n, k, s, p, d in zip("HW", hw, kernel_size, stride, padding, dilation, strict=True):
        span = d * (k - 1) + 1
        if span > n + 2 * p:
            raise SpecError(
                "kernel_size",
                f"kernel {k} (dilation {d}, extent {span}) is larger than the padded input {axis}: "
                f"{n} + 2·{p} = {n + 2 * p}",
            )
        sizes.append((n + 2 * p - span) // s + 1)
    return sizes[0], sizes[1]


@dataclass(frozen=True)
class Conv2d:
    """``torch.nn.Conv2d``: weight (C_out, C_in/groups, kH, kW), bias (C_out,), NCHW.

    Sizes given as an int mean the same on both axes; they are stored as (h, w) pairs.
    """

    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    bias: bool = True

    prefix = "conv"

    def __post_init__(self) -> None:
        require_int("in_channels", self.in_channels, 1)
        require_int("out_channels", self.out_channels, 1)
        object.__setattr__(self, "kernel_size", _pair("kernel_size", self.kernel_size, 1))
        object.__setattr__(self, "stride", _pair("stride", self.stride, 1))
        object.__setattr__(self, "padding", _pair("padding", self.padding, 0))
        object.__setattr__(self, "dilation", _pair("dilation", self.dilation, 1))
        groups = require_int("groups", self.groups, 1)
        if self.in_channels % groups:
            raise SpecError("groups", f"in_channels {self.in_channels} not divisible by groups {groups}")
        if self.out_channels % groups:
            raise SpecError("groups", f"out_channels {self.out_channels} not divisible by groups {groups}")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = _image_shape("in_channels", input_shape)
        if c != self.in_channels:
            raise SpecError("in_channels", f"expected {self.in_channels} channels, got shape {input_shape}")
        ho, wo = _window_output((h, w), self.kernel_size, self.stride, self.padding, self.dilation)
        return (self.out_channels, ho, wo)


def _pool_pairs(layer: object) -> None:
    """Normalise a pool's sizes to pairs (stride defaults to the kernel, as torch) and check 2p ≤ k."""
    kernel = _pair("kernel_size", layer.kernel_size, 1)  # type: ignore[attr-defined]
    stride = kernel if layer.stride is None else _pair("stride", layer.stride, 1)  # type: ignore[attr-defined]
    padding = _pair("padding", layer.padding, 0)  # type: ignore[attr-defined]
    for k, p in zip(kernel, padding, strict=True):
        if 2 * p > k:
            raise SpecError("padding", f"pool padding must be at most half the kernel size, got {p} for {k}")
    object.__setattr__(layer, "kernel_size", kernel)
    object.__setattr__(layer, "stride", stride)
    object.__setattr__(layer, "padding", padding)


@dataclass(frozen=True)
class MaxPool2d:
    """``torch.nn.MaxPool2d`` (``ceil_mode=False``); ``stride`` defaults to ``kernel_size``."""

    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    padding: int | tuple[int, int] = 0
    dilation: int | tuple[int, int] = 1

    prefix = "pool"

    def __post_init__(self) -> None:
        _pool_pairs(self)
        object.__setattr__(self, "dilation", _pair("dilation", self.dilation, 1))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = _image_shape("kernel_size", input_shape)
        return (c, *_window_output((h, w), self.kernel_size, self.stride, self.padding, self.dilation))


@dataclass(frozen=True)
class AvgPool2d:
    """``torch.nn.AvgPool2d`` (``ceil_mode=False``, no divisor override); ``stride`` defaults to
    ``kernel_size``; ``count_include_pad`` as torch (padding zeros count in the divisor)."""

    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    padding: int | tuple[int, int] = 0
    count_include_pad: bool = True

    prefix = "avgpool"

    def __post_init__(self) -> None:
        _pool_pairs(self)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = _image_shape("kernel_size", input_shape)
        return (c, *_window_output((h, w), self.kernel_size, self.stride, self.padding, (1, 1)))


@dataclass(frozen=True)
class LocalResponseNorm:
    """``torch.nn.LocalResponseNorm``: across channels, ``D = k + (α/n)·Σ_window x²``, ``z = x·D^−β``."""

    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0

    prefix = "lrn"

    def __post_init__(self) -> None:
        require_int("size", self.size, 1)
        require_float("alpha", self.alpha)
        require_float("beta", self.beta)
        require_float("k", self.k)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) < 2:
            raise SpecError("size", f"expected a (C, ...) input per sample, got shape {input_shape}")
        return input_shape


@dataclass(frozen=True)
class Flatten:
    """``torch.nn.Flatten()``: (C, H, W) per sample → (C·H·W,), in C order."""

    prefix = "flatten"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(input_shape),)


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout with drop probability ``p``: ``z = x ⊙ m/(1−p)``. The keep mask ``m`` is
    data, drawn once per step before the run and given to both sides (see ``manual/convolution.md``)."""

    p: float = 0.5

    prefix = "dropout"

    def __post_init__(self) -> None:
        p = require_float("p", self.p, non_negative=True)
        if p > 1:
            raise SpecError("p", f"expected a probability in [0, 1], got {p:g}")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape


@dataclass(frozen=True, eq=False)
class UserLayer:
    """A layer the user brings: their own hand ``forward``/``backward`` (the ``check_layer`` pair,
    either form) for a module type handgrad does not know (``check_model(custom_layers=...)``).

    ``params`` lists the module's parameters as (name, shape), named as the module names them
    (``weight``, ``lin.bias``); the hand functions receive and return them under those names.
    ``input_shape``/``out_shape`` are per sample, found by running the module once; ``prefix``
    names the stage (``mylayer1``). The twin runs the user's own module (a copy).
    """

    type_name: str
    params: tuple[tuple[str, tuple[int, ...]], ...]
    input_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    forward: object = field(repr=False, default=None)
    backward: object = field(repr=False, default=None)
    prefix: str = "user"

    def __post_init__(self) -> None:
        if not callable(self.forward) or not callable(self.backward):
            raise SpecError(
                "custom_layers", f"{self.type_name}: expected a (forward, backward) pair of callables"
            )

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != tuple(self.input_shape):
            raise SpecError(
                "input_shape", f"{self.type_name} was sized for inputs {self.input_shape}, got {input_shape}"
            )
        return tuple(self.out_shape)


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


# --- loss, optimizer, learning-rate schedule, gradient clipping ---------------------------------


LOSSES = ("mse", "l1", "smooth_l1", "huber", "bce", "bce_logits", "cross_entropy", "nll")
REDUCTIONS = ("mean", "sum", "none")
CLASS_LOSSES = ("cross_entropy", "nll")  # an (N, C) output against class ids or probabilities
IGNORE_INDEX = -100  # torch's default ignore_index


def _float_tuple(field_name: str, values: object, *, non_negative: bool = True) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise SpecError(field_name, f"expected a non-empty list of numbers, got {values!r}")
    return tuple(require_float(field_name, value, non_negative=non_negative) for value in values)


@dataclass(frozen=True)
class Loss:
    """The loss, as the torch module of the same name (``reduction`` mean, sum or none).

    ``mse`` (``MSELoss``; ``half`` multiplies by ½, the textbook ½·Σ(ŷ−y)²), ``l1`` (``L1Loss``),
    ``smooth_l1`` (``SmoothL1Loss(beta)``), ``huber`` (``HuberLoss(delta)``), ``bce`` (``BCELoss`` on
    probabilities), ``bce_logits`` (``BCEWithLogitsLoss(pos_weight)``, one weight per output or
    one for all), ``cross_entropy`` (``CrossEntropyLoss(weight, ignore_index, label_smoothing)`` on
    logits) and ``nll`` (``NLLLoss(weight, ignore_index)`` on log-probabilities).

    Targets of the class losses: one column of class ids (stored as floats, ``y`` of shape (N, 1))
    or, for ``cross_entropy`` only, one column of probabilities per class (N, C); see
    :meth:`target_form`. An option that does not belong to the kind is refused, naming it.
    """

    kind: str = "mse"
    reduction: str = "mean"
    half: bool = False
    beta: float = 1.0  # smooth_l1: the quadratic zone |d| < beta
    delta: float = 1.0  # huber: the quadratic zone |d| < delta
    pos_weight: tuple[float, ...] | None = None  # bce_logits
    weight: tuple[float, ...] | None = None  # cross_entropy, nll: one weight per class
    ignore_index: int = IGNORE_INDEX  # cross_entropy, nll with class ids
    label_smoothing: float = 0.0  # cross_entropy

    OWNERS = {
        "half": ("mse",),
        "beta": ("smooth_l1",),
        "delta": ("huber",),
        "pos_weight": ("bce_logits",),
        "weight": CLASS_LOSSES,
        "ignore_index": CLASS_LOSSES,
        "label_smoothing": ("cross_entropy",),
    }
    DEFAULTS = {
        "half": False,
        "beta": 1.0,
        "delta": 1.0,
        "pos_weight": None,
        "weight": None,
        "ignore_index": IGNORE_INDEX,
        "label_smoothing": 0.0,
    }

    def __post_init__(self) -> None:
        require_choice("loss", self.kind, LOSSES)
        require_choice("reduction", self.reduction, REDUCTIONS)
        for name, owners in self.OWNERS.items():
            if self.kind not in owners and getattr(self, name) != self.DEFAULTS[name]:
                raise SpecError(name, f"applies to loss {' or '.join(owners)}, not {self.kind}")
        if not isinstance(self.half, bool):
            raise SpecError("half", f"expected true or false, got {self.half!r}")
        require_float("beta", self.beta, non_negative=True)  # torch: beta >= 0 (0 is L1)
        require_float("delta", self.delta, positive=True)  # torch: delta > 0
        if self.pos_weight is not None:
            object.__setattr__(self, "pos_weight", _float_tuple("pos_weight", self.pos_weight))
        if self.weight is not None:
            object.__setattr__(self, "weight", _float_tuple("weight", self.weight))
        require_int("ignore_index", self.ignore_index)
        smoothing = require_float("label_smoothing", self.label_smoothing, non_negative=True)
        if smoothing > 1:
            raise SpecError("label_smoothing", f"expected a number in [0, 1], got {smoothing:g}")

    def target_form(self, y_columns: int, n_outputs: int) -> str:
        """``index`` (one column of class ids), ``probability`` (one column per class, cross_entropy)
        or ``value`` (every other loss: y has ŷ's shape)."""
        if self.kind not in CLASS_LOSSES:
            return "value"
        if n_outputs < 2:
            raise SpecError("loss", f"{self.kind} needs at least 2 classes (outputs), got {n_outputs}")
        if y_columns == 1:
            return "index"
        if self.kind == "cross_entropy" and y_columns == n_outputs:
            return "probability"
        expected = "1 column of class ids" + (
            f" or {n_outputs} columns of probabilities" if self.kind == "cross_entropy" else ""
        )
        raise SpecError("data.y", f"{self.kind} expects {expected}, got {y_columns} columns")

    def check_targets(self, y: np.ndarray, n_outputs: int) -> str:
        """Refuse targets this loss cannot take (naming the field); return :meth:`target_form`."""
        form = self.target_form(y.shape[1], n_outputs)
        if form == "value" and y.shape[1] != n_outputs:
            raise SpecError("data", f"expected {n_outputs} target columns, got {y.shape[1]}")
        if self.kind == "bce" and (y.min() < 0 or y.max() > 1):
            raise SpecError("loss", "bce needs targets in [0, 1]")
        if self.pos_weight is not None and len(self.pos_weight) not in (1, n_outputs):
            raise SpecError("pos_weight", f"expected 1 or {n_outputs} weights, got {len(self.pos_weight)}")
        if self.weight is not None and len(self.weight) != n_outputs:
            raise SpecError("weight", f"expected {n_outputs} class weights, got {len(self.weight)}")
        if form == "index":
            ids = y[:, 0]
            valid = (ids == np.round(ids)) & (((ids >= 0) & (ids < n_outputs)) | (ids == self.ignore_index))
            if not valid.all():
                bad = ids[~valid][0]
                expected = f"integers in [0, {n_outputs}) or {self.ignore_index}"
                raise SpecError("data.y", f"class ids must be {expected}, got {bad:g}")
        if form == "probability" and self.ignore_index != IGNORE_INDEX:
            raise SpecError("ignore_index", "not supported with class-probability targets (as torch)")
        return form


OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")

# Each optimizer's hyper-parameters with torch's defaults (``lr`` is the spec's own field).
OPTIMIZER_DEFAULTS: dict[str, dict[str, object]] = {
    "sgd": {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0, "maximize": False},
    "adam": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "maximize": False},
    "adamw": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2, "amsgrad": False, "maximize": False},
    "rmsprop": {
        "alpha": 0.99,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "momentum": 0.0,
        "centered": False,
        "maximize": False,
    },
    "adagrad": {
        "lr_decay": 0.0,
        "weight_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "eps": 1e-10,
        "maximize": False,
    },
}
FLAGS = ("nesterov", "amsgrad", "centered", "maximize")

LR_SCHEDULES = ("none", "step", "exponential", "cosine")


@dataclass(frozen=True)
class LRSchedule:
    """A learning-rate schedule stepped once after every optimizer step, as torch's schedulers.

    ``step``: ``StepLR(step_size, gamma)``; ``exponential``: ``ExponentialLR(gamma)``; ``cosine``:
    ``CosineAnnealingLR(T_max=t_max, eta_min)``; ``none``: the lr stays.
    """

    kind: str = "none"
    step_size: int = 1
    gamma: float = 0.1
    t_max: int = 1
    eta_min: float = 0.0

    def __post_init__(self) -> None:
        require_choice("schedule", self.kind, LR_SCHEDULES)
        require_int("step_size", self.step_size, 1)
        require_float("gamma", self.gamma, positive=True)
        require_int("t_max", self.t_max, 1)
        require_float("eta_min", self.eta_min, non_negative=True)


@dataclass(frozen=True)
class Clip:
    """Gradient clipping between backward and the update: by the total norm
    (``clip_grad_norm_(max_norm, norm_type)``) or element-wise by value (``clip_grad_value_``)."""

    max_norm: float | None = None
    norm_type: float = 2.0
    value: float | None = None

    def __post_init__(self) -> None:
        if (self.max_norm is None) == (self.value is None):
            raise SpecError("clip_norm", "give exactly one of clip_norm (max_norm) and clip_value")
        if self.max_norm is not None:
            require_float("clip_norm", self.max_norm, positive=True)
        if self.value is not None:
            require_float("clip_value", self.value, positive=True)
        if isinstance(self.norm_type, bool) or not isinstance(self.norm_type, (int, float, np.number)):
            raise SpecError("norm_type", f"expected a number > 0 or inf, got {self.norm_type!r}")
        if math.isnan(self.norm_type) or self.norm_type <= 0:
            raise SpecError("norm_type", f"expected a number > 0 or inf, got {self.norm_type}")


@dataclass(frozen=True)
class Optimizer:
    """An optimizer as ``torch.optim`` implements it, its schedule and its gradient clipping.

    ``options`` holds the kind's hyper-parameters (:data:`OPTIMIZER_DEFAULTS` names them with
    torch's defaults, filled in here); one that the kind does not take is refused, as are values
    torch refuses (betas outside [0, 1), negative eps, nesterov without momentum or with
    dampening).
    """

    kind: str = "sgd"
    lr: float = 0.5
    options: Mapping[str, object] = field(default_factory=dict)
    schedule: LRSchedule | None = None
    clip: Clip | None = None

    def __post_init__(self) -> None:
        require_choice("optimizer", self.kind, OPTIMIZERS)
        require_float("lr", self.lr, positive=True)
        defaults = OPTIMIZER_DEFAULTS[self.kind]
        for name in self.options:
            if name not in defaults:
                raise SpecError(
                    str(name), f"not an option of {self.kind}; its options are {', '.join(defaults)}"
                )
        options = {**defaults, **self.options}
        for name in FLAGS:
            if name in options and not isinstance(options[name], (bool, np.bool_)):
                raise SpecError(name, f"expected true or false, got {options[name]!r}")
            if name in options:
                options[name] = bool(options[name])
        for name in ("momentum", "dampening", "weight_decay", "eps", "lr_decay", "initial_accumulator_value"):
            if name in options:
                options[name] = require_float(name, options[name], non_negative=True)
        if "dampening" in options and options["dampening"] > 1:
            raise SpecError("dampening", f"expected a number in [0, 1], got {options['dampening']:g}")
        if "alpha" in options:
            options["alpha"] = require_float("alpha", options["alpha"], non_negative=True)
            if options["alpha"] > 1:
                raise SpecError("alpha", f"expected a number in [0, 1], got {options['alpha']:g}")
        if "betas" in options:
            betas = options["betas"]
            if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
                raise SpecError("betas", f"expected two numbers (beta1, beta2), got {betas!r}")
            options["betas"] = tuple(
                require_float("betas", beta, non_negative=True, below=1.0) for beta in betas
            )
        if options.get("nesterov") and (options["momentum"] <= 0 or options["dampening"] != 0):
            field_name = "momentum" if options["momentum"] <= 0 else "dampening"
            raise SpecError(field_name, "nesterov needs a momentum > 0 and dampening 0 (as torch)")
        object.__setattr__(self, "options", options)
        if self.schedule is not None and not isinstance(self.schedule, LRSchedule):
            raise SpecError("schedule", f"expected an LRSchedule, got {self.schedule!r}")
        if self.clip is not None and not isinstance(self.clip, Clip):
            raise SpecError("clip", f"expected a Clip, got {self.clip!r}")


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

    def __len__(self) -> int:
        return self.steps

    def _order_of(self, epoch: int) -> np.ndarray:
        if self.schedule.mode == "batch" or self.schedule.order != "shuffle":
            return self._fixed
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
