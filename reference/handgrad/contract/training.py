"""What trains a network: the loss, the optimizer with its learning-rate schedule and gradient
clipping, as the torch objects of the same names take them. Options validated with
:class:`~handgrad.contract.spec.SpecError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from handgrad.contract.spec import SpecError, require_choice, require_float, require_int

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
