"""Planted bugs of the optimizers: Adam without bias correction, AdamW's decay coupled, SGD's
weight decay with the wrong sign, RMSprop's ε inside the root, Adagrad's sum without the square."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from handgrad.hand import optim
from handgrad.mutants.registry import XOR, Mutant

_ADAM, _SGD, _RMSPROP, _ADAGRAD = optim.adam, optim.sgd, optim.rmsprop, optim.adagrad


def adam_without_bias_correction(o, p, g, s, t, lr, *, decoupled=False):  # noqa: ANN001, ANN201
    """Bug: m and v used raw: θ ← θ − η m/(√v + ε), no 1 − βᵗ."""
    beta1, beta2 = o["betas"]
    if o["weight_decay"] != 0:
        if decoupled:
            p = p * (1 - lr * o["weight_decay"])
        else:
            g = g + o["weight_decay"] * p
    m = beta1 * s["exp_avg"] + (1 - beta1) * g
    v = beta2 * s["exp_avg_sq"] + (1 - beta2) * g * g
    return p - lr * m / (np.sqrt(v) + o["eps"]), {**s, "exp_avg": m, "exp_avg_sq": v}


def adamw_decay_coupled(o, p, g, s, t, lr):  # noqa: ANN001, ANN201
    """Bug: AdamW's weight decay added to the gradient (Adam's L2), not decoupled."""
    return _ADAM(o, p, g, s, t, lr, decoupled=False)


def sgd_weight_decay_sign(o, p, g, s, t, lr):  # noqa: ANN001, ANN201
    """Bug: g ← g − λθ (the decay pushes the weights away from 0)."""
    return _SGD({**o, "weight_decay": -o["weight_decay"]}, p, g, s, t, lr)


def rmsprop_eps_inside_sqrt(o, p, g, s, t, lr):  # noqa: ANN001, ANN201
    """Bug: θ ← θ − η g/√(v + ε) where torch has g/(√v + ε)."""
    alpha = o["alpha"]
    v = s["square_avg"] * alpha + (1 - alpha) * g * g
    return p - lr * g / np.sqrt(v + o["eps"]), {**s, "square_avg": v}


def adagrad_sum_without_square(o, p, g, s, t, lr):  # noqa: ANN001, ANN201
    """Bug: G ← G + |g| (the square forgotten)."""
    state_sum = s["sum"] + np.abs(g)
    return p - lr * g / (np.sqrt(state_sum) + o["eps"]), {**s, "sum": state_sum}


# --- rewrites with one slip: optim.RULES[kind] = adam_rule(slip) ---------------------------------
# Each rule is written out plainly (textbook order of operations); with slip=None it must agree
# with torch (the control), with a slip it must first differ at dense1.W_next, step 1.


def adam_rule(slip: str | None) -> Callable[..., Any]:
    """Adam written out plainly (textbook order of operations), with at most one slip planted."""

    def rule(o, p, g, s, t, lr, *, decoupled=False):  # noqa: ANN001, ANN202
        beta1, beta2 = o["betas"]
        eps, wd = o["eps"], o["weight_decay"]
        if wd != 0:
            if decoupled or slip == "adamw_decay_in_adam":
                p = p * (1 - lr * wd)  # slip: AdamW's decoupled decay inside Adam
            else:
                g = g + wd * p
        m = beta1 * s["exp_avg"] + (1 - beta1) * g
        v = beta2 * s["exp_avg_sq"] + (1 - beta2) * g * g
        bc1, bc2 = 1 - beta1**t, 1 - beta2**t
        if slip == "no_bias_correction":
            bc1 = bc2 = 1.0  # slip: m and v used raw, biased towards 0 on early steps
        if slip == "eps_inside_sqrt":
            denom = np.sqrt(v / bc2 + eps)  # slip: √(v̂ + ε) instead of √v̂ + ε
        else:
            denom = np.sqrt(v) / np.sqrt(bc2) + eps
        return p - lr / bc1 * m / denom, {**s, "exp_avg": m, "exp_avg_sq": v}

    return rule


def sgd_rule(slip: str | None) -> Callable[..., Any]:
    """SGD with momentum written out plainly, with at most one slip planted."""

    def rule(o, p, g, s, t, lr):  # noqa: ANN001, ANN202
        mu = o["momentum"]
        buf = g.copy() if "momentum_buffer" not in s else mu * s["momentum_buffer"] + (1 - o["dampening"]) * g
        if o["nesterov"] and slip != "nesterov_without_look_ahead":
            step = g + mu * buf
        else:
            step = buf  # slip (with nesterov on): the plain momentum step, no look-ahead
        return p - lr * step, {**s, "momentum_buffer": buf}

    return rule


MUTANTS: tuple[Mutant, ...] = (
    # optimizers
    Mutant(
        "adam-no-bias-correction",
        "optim",
        ((optim.RULES, "adam", adam_without_bias_correction),),
        "xor",
        (*XOR, "--optimizer", "adam", "--lr", "0.05"),
        "dense1.W_next",
    ),
    Mutant(
        "adamw-decay-coupled",
        "optim",
        ((optim.RULES, "adamw", adamw_decay_coupled),),
        "xor",
        (*XOR, "--optimizer", "adamw", "--lr", "0.05", "--weight-decay", "0.1"),
        "dense1.W_next",
    ),
    Mutant(
        "sgd-weight-decay-sign",
        "optim",
        ((optim.RULES, "sgd", sgd_weight_decay_sign),),
        "xor",
        (*XOR, "--weight-decay", "0.1"),
        "dense1.W_next",
    ),
    Mutant(
        "rmsprop-eps-inside-sqrt",
        "optim",
        ((optim.RULES, "rmsprop", rmsprop_eps_inside_sqrt),),
        "xor",
        (*XOR, "--optimizer", "rmsprop", "--lr", "0.01", "--eps", "1e-3"),
        "dense1.W_next",
    ),
    Mutant(
        "adagrad-sum-without-square",
        "optim",
        ((optim.RULES, "adagrad", adagrad_sum_without_square),),
        "xor",
        (*XOR, "--optimizer", "adagrad"),
        "dense1.W_next",
    ),
)
