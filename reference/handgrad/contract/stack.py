"""The layer-stack family's names: for each layer kind, its parameters (short name, shape, symbol),
its output term and its fan-in; the network's parameter table; each stage's term names.

Both sides name a stage's terms through :class:`StageTerms`; the hand side adds its forward and
backward to each kind's :class:`LayerShape` (handgrad.hand.network.LayerOps), the twin its torch
module (handgrad.twin.network).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from handgrad.contract.conv_layers import (
    AvgPool2d,
    Conv2d,
    Dropout,
    Flatten,
    LocalResponseNorm,
    MaxPool2d,
    UserLayer,
)
from handgrad.contract.normalization import BatchNorm, LayerNorm
from handgrad.contract.spec import Activation, Dense, Network, Stage
from handgrad.contract.trace import Reduction

SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
ParamRows = list[tuple[str, tuple[int, ...], str]]
BufferRows = list[tuple[str, tuple[int, ...], str, float | int]]


def sup(k: int) -> str:
    """``3 -> '⁽³⁾'``: the layer index as the manual prints it."""
    return f"⁽{str(k).translate(SUPERSCRIPTS)}⁾"


@dataclass(frozen=True)
class LayerShape:
    """What both sides agree on for one layer kind: ``params(stage)`` lists (short name, shape,
    symbol), ``output(stage)`` names the output term (suffix, symbol), ``fan_in(stage)`` feeds the
    default init's bound 1/√fan_in, ``sums(stage)`` maps each parameter whose gradient is a sum
    of products to its einsum subscripts over (the output's gradient, the stage's input): a bias
    ``no->o``, a dense weight ``no,ni->oi`` (``Term.summands``). ``buffers(stage)`` lists the
    module's buffers (short name, shape, symbol, initial value: BatchNorm's running statistics),
    updated by the forward pass and compared as state terms; ``init(stage)`` gives parameters a
    constant initial value (BatchNorm's γ = 1, β = 0, as torch) instead of the U(±1/√fan_in) draw."""

    params: Callable[[Stage], ParamRows]
    output: Callable[[Stage], tuple[str, str]]
    fan_in: Callable[[Stage], int] = lambda stage: 1
    sums: Callable[[Stage], dict[str, str]] = lambda stage: {}
    buffers: Callable[[Stage], BufferRows] = lambda stage: []
    init: Callable[[Stage], dict[str, float]] = lambda stage: {}


def _dense_params(stage: Stage) -> ParamRows:
    layer: Dense = stage.layer  # type: ignore[assignment]
    if layer.fold_bias:
        return [("Wt", (layer.out_features, layer.in_features + 1), f"W̃{sup(stage.k)}")]
    shapes = [("W", (layer.out_features, layer.in_features), f"W{sup(stage.k)}")]
    if layer.bias:
        shapes.append(("b", (layer.out_features,), f"b{sup(stage.k)}"))
    return shapes


def _conv_params(stage: Stage) -> ParamRows:
    layer: Conv2d = stage.layer  # type: ignore[assignment]
    shape = (layer.out_channels, layer.in_channels // layer.groups, *layer.kernel_size)  # type: ignore[misc]
    shapes = [("W", shape, f"W⁽{stage.name}⁾")]
    if layer.bias:
        shapes.append(("b", (layer.out_channels,), f"b⁽{stage.name}⁾"))
    return shapes


def _conv_fan_in(stage: Stage) -> int:
    """torch's Conv2d init bound 1/√fan_in with fan_in = C_in/groups · kH · kW."""
    layer: Conv2d = stage.layer  # type: ignore[assignment]
    kh, kw = layer.kernel_size  # type: ignore[misc]
    return layer.in_channels // layer.groups * kh * kw


def _dense_sums(stage: Stage) -> dict[str, str]:
    """∂L/∂W = Σₙ ∂L/∂zₙᵀ·xₙ and ∂L/∂b = Σₙ ∂L/∂zₙ over the batch."""
    layer: Dense = stage.layer  # type: ignore[assignment]
    if layer.fold_bias:  # W̃'s sum runs over x̃ = [x 1], which no term holds
        return {}
    return {"W": "no,ni->oi", **({"b": "no->o"} if layer.bias else {})}


def _conv_sums(stage: Stage) -> dict[str, str]:
    """∂L/∂b = Σ over the batch and the positions of ∂L/∂z (the weight's sum is a correlation)."""
    return {"b": "nchw->c"} if stage.layer.bias else {}  # type: ignore[attr-defined]


def _norm_params(stage: Stage) -> ParamRows:
    """γ and β (torch's ``weight`` and ``bias``) of a BatchNorm (C,) or a LayerNorm (normalized_shape)."""
    layer = stage.layer
    if isinstance(layer, BatchNorm):
        shape, gamma, beta = (layer.num_features,), layer.affine, layer.affine
    else:
        shape, gamma = tuple(layer.normalized_shape), layer.elementwise_affine  # type: ignore[attr-defined]
        beta = gamma and layer.bias  # type: ignore[attr-defined]
    rows = [("gamma", shape, f"γ⁽{stage.name}⁾")] if gamma else []
    return rows + ([("beta", shape, f"β⁽{stage.name}⁾")] if beta else [])


def _norm_sums(stage: Stage) -> dict[str, str]:
    """∂L/∂β = Σ ∂L/∂y over every axis but the channel (BatchNorm) or the normalized ones (LayerNorm)."""
    if not any(short == "beta" for short, _, _ in _norm_params(stage)):
        return {}
    if isinstance(stage.layer, BatchNorm):
        return {"beta": "nc...->c"}
    kept = "abcdefgh"[: len(stage.layer.normalized_shape)]  # type: ignore[attr-defined]
    return {"beta": f"...{kept}->{kept}"}


def _batchnorm_buffers(stage: Stage) -> BufferRows:
    """The running statistics (short name, shape, symbol, torch's initial value; an int: int64)."""
    layer: BatchNorm = stage.layer  # type: ignore[assignment]
    if not layer.track_running_stats:
        return []
    c, name = (layer.num_features,), stage.name
    return [
        ("running_mean", c, f"μ̂⁽{name}⁾", 0.0),
        ("running_var", c, f"σ̂²⁽{name}⁾", 1.0),
        ("num_batches_tracked", (), f"t⁽{name}⁾", 0),
    ]


def _no_params(stage: Stage) -> ParamRows:
    return []


def _user_params(stage: Stage) -> ParamRows:
    """A user layer's parameters under the module's own names (``weight``, ``lin.bias``)."""
    layer: UserLayer = stage.layer  # type: ignore[assignment]
    return [(name, tuple(shape), f"{name}⁽{stage.name}⁾") for name, shape in layer.params]


def _shape_only(stage: Stage) -> tuple[str, str]:
    return "out", f"out⁽{stage.name}⁾"


def _activation_output(stage: Stage) -> tuple[str, str]:
    return "a", f"a{sup(stage.k)}" if stage.name.startswith("dense") else f"a⁽{stage.name}⁾"


LAYER_SHAPES: dict[type, LayerShape] = {
    Dense: LayerShape(
        _dense_params,
        lambda stage: ("z", f"z{sup(stage.k)}"),
        lambda stage: stage.layer.in_features,
        _dense_sums,
    ),
    Activation: LayerShape(_no_params, _activation_output),
    Conv2d: LayerShape(_conv_params, lambda stage: ("z", f"z⁽{stage.name}⁾"), _conv_fan_in, _conv_sums),
    MaxPool2d: LayerShape(_no_params, _shape_only),
    AvgPool2d: LayerShape(_no_params, _shape_only),
    LocalResponseNorm: LayerShape(_no_params, _shape_only),
    Flatten: LayerShape(_no_params, _shape_only),
    Dropout: LayerShape(_no_params, _shape_only),
    UserLayer: LayerShape(_user_params, _shape_only),
    BatchNorm: LayerShape(
        _norm_params,
        lambda stage: ("y", f"y⁽{stage.name}⁾"),
        sums=_norm_sums,
        buffers=_batchnorm_buffers,
        init=lambda stage: {"gamma": 1.0, "beta": 0.0},
    ),
    LayerNorm: LayerShape(
        _norm_params,
        lambda stage: ("y", f"y⁽{stage.name}⁾"),
        sums=_norm_sums,
        init=lambda stage: {"gamma": 1.0, "beta": 0.0},
    ),
}


def shape_of(stage: Stage) -> LayerShape:
    return LAYER_SHAPES[type(stage.layer)]


def stage_terms(stages: list[Stage]) -> list[StageTerms]:
    """Each stage's :class:`StageTerms`, each knowing the term that holds its input."""
    terms: list[StageTerms] = []
    for stage in stages:
        terms.append(StageTerms.of(stage, terms[-1].output if terms else None))
    return terms


def cancelled_gradients(network: Network) -> list[str]:
    """The parameters whose gradient is 0 in exact arithmetic: the bias of a Dense or Conv2d that
    feeds a BatchNorm normalizing with the batch's statistics (x̂ is unchanged by a shift per
    channel, so ∂L/∂b = Σ ∂L/∂z over the batch = 0). Each side computes rounding noise there."""
    stages = network.stages()
    return [
        f"{stage.name}.b"
        for stage, following in zip(stages, stages[1:], strict=False)
        if isinstance(stage.layer, (Dense, Conv2d))
        and stage.layer.bias
        and not getattr(stage.layer, "fold_bias", False)
        and isinstance(following.layer, BatchNorm)
        and following.layer.batch_statistics
    ]


def param_table(network: Network) -> ParamRows:
    """Every parameter of the network as (full name ``dense1.W``, shape, symbol), in order."""
    return [
        (f"{stage.name}.{short}", shape, symbol)
        for stage in network.stages()
        for short, shape, symbol in shape_of(stage).params(stage)
    ]


def _gradient_symbol(symbol: str) -> str:
    return f"∂L/∂{symbol}"


@dataclass(frozen=True)
class StageTerms:
    """The names and symbols of one stage's terms, worked out once per run rather than per step:
    its output (``dense1.z``, z⁽¹⁾), the gradient there (``dense1.dL_dz``, ∂L/∂z⁽¹⁾), and per
    parameter (short name, full name, gradient term, gradient symbol); ``summands``: the gradient
    terms that are sums of the output's gradient (``Term.summands``). Both sides use it."""

    stage: Stage
    output: str
    output_symbol: str
    output_grad: str
    output_grad_symbol: str
    params: tuple[tuple[str, str, str, str], ...]
    summands: dict[str, Reduction]

    @classmethod
    def of(cls, stage: Stage, input_term: str | None = None) -> StageTerms:
        """``input_term``: the term holding the stage's input (the stage before's output; None for
        the data, which no term holds)."""
        shape = shape_of(stage)
        suffix, symbol = shape.output(stage)
        params = tuple(
            (short, f"{stage.name}.{short}", f"{stage.name}.dL_d{short}", _gradient_symbol(param_symbol))
            for short, _, param_symbol in shape.params(stage)
        )
        output_grad = f"{stage.name}.dL_d{suffix}"
        summands = {}
        for short, subscripts in shape.sums(stage).items():
            operands = (output_grad, input_term)[: subscripts.split("->")[0].count(",") + 1]
            if None not in operands:
                summands[f"{stage.name}.dL_d{short}"] = Reduction(subscripts, operands)  # type: ignore[arg-type]
        output = f"{stage.name}.{suffix}"
        return cls(stage, output, symbol, output_grad, _gradient_symbol(symbol), params, summands)
