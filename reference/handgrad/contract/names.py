"""The shared language of both sides: term names, symbols and parameter tables (the contract).

hand/ and twin/ name the same quantity the same way because both read it from here; neither
imports the other. Symbols use the manual's and the workbook's notation: layer as a parenthesised
superscript, time step as a subscript (``i⁽¹⁾₃``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from handgrad.contract.spec import Activation, Stage
from handgrad.contract.training import Optimizer

SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
SUP = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")

# the recurrent family: torch's modes, their gates, and the parameters of one layer
CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")
GATES = {
    "rnn_tanh": ("h",),
    "rnn_relu": ("h",),
    "gru": ("r", "z", "n"),
    "lstm": ("i", "f", "g", "o"),
}
PREFIX = {"rnn_tanh": "rnn", "rnn_relu": "rnn", "gru": "gru", "lstm": "lstm"}
PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
PARAM_TERMS = ("dL_dW_ih", "dL_dW_hh", "dL_db_ih", "dL_db_hh")
PARAM_SYMBOLS = {
    "weight_ih": "∂L/∂W_ih",
    "weight_hh": "∂L/∂W_hh",
    "bias_ih": "∂L/∂b_ih",
    "bias_hh": "∂L/∂b_hh",
}


def sub(t: int) -> str:
    """``3 -> '₃'``: the time step as a subscript."""
    return str(t).translate(SUB)


def term_symbol(base: str, layer: int, t: int | None = None) -> str:
    """``i⁽¹⁾₃`` for base ``i``, layer 1, step 3; ``∂L/∂W_ih⁽²⁾`` for a whole-layer term."""
    sym = f"{base}⁽{str(layer).translate(SUP)}⁾"
    return sym if t is None else sym + sub(t)


def term_prefix(cell: str, layer: int, name: str | None = None) -> str:
    """``lstm1`` for the first lstm layer (``layer`` counts from 0 here, from 1 in the name)."""
    return f"{name or PREFIX[cell]}{layer + 1}"


def gate_grad_names(cell: str) -> tuple[str, ...]:
    """The per-step pre-activation gradient names: ``dL_dz`` (rnn), ``dL_dz_r`` ... (gru/lstm).

    ``z`` is a pre-activation in every family (``dL_da`` is always ∂L/∂(activation output)).
    """
    if cell in ("rnn_tanh", "rnn_relu"):
        return ("dL_dz",)
    return tuple(f"dL_dz_{g}" for g in GATES[cell])


def state_keys(spec: Optimizer) -> list[tuple[str, str]]:
    """Per-parameter state, as torch's ``optimizer.state`` keys with their symbols, in order."""
    o = spec.options
    if spec.kind == "sgd":
        return [("momentum_buffer", "b")] if o["momentum"] != 0 else []
    if spec.kind in ("adam", "adamw"):
        keys = [("exp_avg", "m"), ("exp_avg_sq", "v")]
        return keys + [("max_exp_avg_sq", "v̂ᵐᵃˣ")] if o["amsgrad"] else keys
    if spec.kind == "rmsprop":
        keys = [("square_avg", "v")]
        if o["centered"]:
            keys.append(("grad_avg", "ḡ"))
        if o["momentum"] > 0:
            keys.append(("momentum_buffer", "b"))
        return keys
    if spec.kind == "adagrad":
        return [("sum", "G")]
    raise ValueError(f"unknown optimizer {spec.kind!r}")


# diagnostics: f′ below ρ·max f′ counts as saturated; max f′ per activation (σ′(0) = 1/4, tanh′(0) = 1)
SATURATION_RHO = 0.1
MAX_SLOPE = {"sigmoid": 0.25, "tanh": 1.0}
SATURATION_THRESHOLD = {kind: SATURATION_RHO * slope for kind, slope in MAX_SLOPE.items()}
DEAD_KINDS = ("relu",)

Row = tuple[str, str, np.ndarray]  # (term name, symbol, value)


def weight_name(stage: Stage, params: Mapping[str, np.ndarray]) -> str | None:
    """The stage's weight matrix, ``dense1.W`` (``dense1.Wt`` when folded), or None if it has none."""
    if isinstance(stage.layer, Activation):  # it shares its owner's name, not its weights
        return None
    for short in ("W", "Wt"):
        if f"{stage.name}.{short}" in params:
            return f"{stage.name}.{short}"
    return None
