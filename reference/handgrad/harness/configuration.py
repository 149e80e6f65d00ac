"""What the user asked for against what torch ran with: the report's configuration block.

Both sides of a run are built from one spec, so an option lost between the command line and the
spec, or between the spec and torch, makes both sides train the same wrong model and agree. The
twin therefore reads its configuration back from the torch objects
(:mod:`handgrad.twin.configuration`: ``param_groups``, loss-module attributes, the scheduler's
``state_dict()``, the clipping call, layer-module attributes), and :func:`check_configuration`
compares it, option by option, with what was asked:

* :func:`asked_from_spec`: the run's spec (network or model, loss, optimizer, schedule, clipping,
  dtype, device) in the same keys, for a run built in Python;
* over it, ``Experiment.asked``: what a scenario read straight from the command line
  (:func:`handgrad.scenarios.common.asked_from_args` and the scenario's own options), so that an
  option dropped while the spec is built is seen too.

Numbers compare exactly: torch keeps the very float it was given (manual/conventions.md,
"Configuration read back"). A key asked for that torch does not hold is a finding; keys torch
holds beyond those asked (its own switches such as ``foreach``) are not listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from handgrad.contract.conv_layers import AvgPool2d, Conv2d, Dropout, LocalResponseNorm, MaxPool2d
from handgrad.contract.normalization import BatchNorm, LayerNorm
from handgrad.contract.runs import MultitaskRun, RecurrentRun, RunSpec, StackRun
from handgrad.contract.spec import Activation, Dense
from handgrad.contract.training import Clip, Loss, LRSchedule, Optimizer

if TYPE_CHECKING:
    from handgrad.contract.multitask import Multitask
    from handgrad.contract.recurrent import RecurrentModel
    from handgrad.contract.spec import Network

Configuration = dict[str, object]
NOT_HELD = "(torch holds no such option)"


@dataclass(frozen=True)
class OptionCheck:
    """One option: what was asked, what torch ran with (:data:`NOT_HELD` where torch holds no such
    option; None is a value, e.g. a loss ``weight`` left out)."""

    option: str
    asked: object
    torch: object
    ok: bool

    def message(self) -> str:
        ran = NOT_HELD if self.torch == NOT_HELD else f"torch ran with {show(self.torch)}"
        return f"{self.option} asked {show(self.asked)}, {ran}"

    def to_json(self) -> dict[str, object]:
        return {"option": self.option, "asked": self.asked, "torch": self.torch, "ok": self.ok}


def plain(value: object) -> object:
    """Tuples and arrays as lists, NumPy scalars as Python numbers: one form for both columns."""
    if isinstance(value, (tuple, list, np.ndarray)):
        return [plain(item) for item in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def show(value: object) -> str:
    if isinstance(value, list):
        return ",".join(show(item) for item in value)
    return str(value)


def check_configuration(asked: Configuration, ran: Configuration) -> list[OptionCheck]:
    """Every asked option, in the order asked, against torch's value; exact equality."""
    checks = []
    for option, value in asked.items():
        wanted = plain(value)
        held = option in ran
        got = plain(ran[option]) if held else NOT_HELD
        checks.append(OptionCheck(option, wanted, got, held and _same(wanted, got)))
    return checks


def _same(asked: object, torch: object) -> bool:
    if isinstance(asked, bool) or isinstance(torch, bool):
        return type(asked) is type(torch) and asked == torch
    if isinstance(asked, list) and isinstance(torch, list):
        return len(asked) == len(torch) and all(_same(a, t) for a, t in zip(asked, torch, strict=True))
    if isinstance(asked, list) and len(asked) == 2 and isinstance(torch, int):  # torch's _pair: 2 is (2, 2)
        return all(_same(a, torch) for a in asked)
    return type(asked) is not list and type(torch) is not list and asked == torch


# --- asked, from the spec --------------------------------------------------------------------------


def loss_asked(loss: Loss, prefix: str = "loss") -> Configuration:
    """The loss kind, reduction, ½, and the options its torch module holds (with their defaults)."""
    result: Configuration = {prefix: loss.kind, f"{prefix}.reduction": loss.reduction}
    result[f"{prefix}.half"] = loss.half
    for name, owners in Loss.OWNERS.items():
        if name != "half" and loss.kind in owners:
            result[f"{prefix}.{name}"] = plain(getattr(loss, name))
    return result


def optimizer_asked(optimizer: Optimizer) -> Configuration:
    """The optimizer, its lr and every option of its kind, its lr schedule and its clipping."""
    result: Configuration = {"optimizer": optimizer.kind, "optimizer.lr": optimizer.lr}
    result.update({f"optimizer.{name}": plain(value) for name, value in optimizer.options.items()})
    result.update(schedule_asked(optimizer.schedule))
    result.update(clip_asked(optimizer.clip))
    return result


def schedule_asked(schedule: LRSchedule | None) -> Configuration:
    if schedule is None or schedule.kind == "none":
        return {"schedule": "none"}
    names = {"step": ("step_size", "gamma"), "exponential": ("gamma",), "cosine": ("t_max", "eta_min")}
    options = {f"schedule.{name}": getattr(schedule, name) for name in names[schedule.kind]}
    return {"schedule": schedule.kind, **options}


def clip_asked(clip: Clip | None) -> Configuration:
    if clip is None:
        return {"clip": "none"}
    if clip.max_norm is not None:
        return {"clip": "norm", "clip.max_norm": clip.max_norm, "clip.norm_type": clip.norm_type}
    return {"clip": "value", "clip.value": clip.value}


def activation_asked(name: str, kind: str, slope: float) -> Configuration:
    result: Configuration = {f"{name}.activation": kind}
    if kind == "leaky_relu":
        result[f"{name}.slope"] = slope
    return result


_LAYER_FIELDS: dict[type, tuple[str, ...]] = {
    Dense: ("in_features", "out_features", "bias"),
    Conv2d: ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias"),
    MaxPool2d: ("kernel_size", "stride", "padding", "dilation"),
    AvgPool2d: ("kernel_size", "stride", "padding", "count_include_pad"),
    LocalResponseNorm: ("size", "alpha", "beta", "k"),
    Dropout: ("p",),
    BatchNorm: ("num_features", "eps", "momentum", "affine", "track_running_stats", "training"),
    LayerNorm: ("normalized_shape", "eps", "elementwise_affine", "bias"),
}


def network_asked(network: Network) -> Configuration:
    """Each stage's options as its spec states them (``dense1.out_features``, ``conv1.stride``)."""
    result: Configuration = {}
    for stage in network.stages():
        layer = stage.layer
        if isinstance(layer, Activation):
            result.update(activation_asked(stage.name, layer.kind, layer.slope))
            continue
        for field in _LAYER_FIELDS.get(type(layer), ()):
            result[f"{stage.name}.{field}"] = plain(getattr(layer, field))
    return result


def recurrent_asked(model: RecurrentModel) -> Configuration:
    """The fused recurrent module (``rnn.*``) and the head (``dense1.*``) of a recurrent model."""
    from handgrad.contract.recurrent import HEAD

    result: Configuration = {
        "rnn.cell": model.cell,
        "rnn.input_size": model.input_size,
        "rnn.hidden_size": model.hidden_size,
        "rnn.num_layers": model.num_layers,
        "rnn.bias": True,
        "rnn.batch_first": model.batch_first,
    }
    if model.cell in ("rnn_tanh", "rnn_relu"):
        result["rnn.nonlinearity"] = model.cell[4:]
    result.update({f"{HEAD}.in_features": model.hidden_size, f"{HEAD}.out_features": model.output_size})
    result[f"{HEAD}.bias"] = True
    result.update(activation_asked(HEAD, model.output_activation, model.slope))
    return result


def multitask_asked(model: Multitask) -> Configuration:
    """Trunk and heads of a multitask model, and both heads' losses (``loss1.*``, ``loss2.*``)."""
    result: Configuration = {}
    for part, (n_out, n_in) in model.sizes().items():
        result.update({f"{part}.in_features": n_in, f"{part}.out_features": n_out, f"{part}.bias": True})
        if part == "trunk":
            result.update(activation_asked("trunk", model.activation, model.slope))
    return {**result, **loss_asked(model.loss1, "loss1"), **loss_asked(model.loss2, "loss2")}


def asked_from_spec(spec: RunSpec | None, dtype: str, device: str) -> Configuration:
    """What the run's spec asks torch for, in the keys torch's configuration is read back in."""
    result: Configuration = {"dtype": dtype, "device": device}
    if isinstance(spec, StackRun):
        result.update(network_asked(spec.network))
    if isinstance(spec, RecurrentRun):
        result.update(recurrent_asked(spec.model))
    if isinstance(spec, MultitaskRun):
        result.update(multitask_asked(spec.model))
    elif isinstance(spec, (StackRun, RecurrentRun)):
        result.update(loss_asked(spec.loss))
    if spec is not None:
        result.update(optimizer_asked(spec.optimizer))
    return result


def experiment_configuration(experiment: Any) -> list[OptionCheck] | None:  # a harness Experiment
    """The configuration block of a run: None when the twin reads none back (a hand-only run, a
    side built outside handgrad)."""
    ran = getattr(experiment.twin, "configuration", None)
    if ran is None:
        return None
    asked = {**asked_from_spec(experiment.spec, experiment.dtype, experiment.device), **experiment.asked}
    return check_configuration(asked, ran)
