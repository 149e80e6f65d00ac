"""Planted bugs, one at a time: each textbook slip must be caught, at the term where it first shows.

A mutant replaces one hand rule (``optim.RULES[kind]``, ``losses.forward`` / ``losses.backward``)
for the length of a test; the harness must then report its first divergence at step 1 in the
expected term, with every term before it in agreement. A control runs the same rewritten rule
without the slip and must agree, so what is caught is the slip and not the rewrite.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from handgrad import harness
from handgrad.contract.spec import Data, Loss, Network, Optimizer, Schedule
from handgrad.hand import losses, optim
from handgrad.scenarios.dense import XOR_X, XOR_Y
from handgrad.scenarios.stack import stack_experiment


def xor_run(optimizer: Optimizer, loss: Loss | None = None, steps: int = 3) -> harness.Report:
    experiment = stack_experiment(
        "xor",
        Network.mlp([2, 3, 1]),
        loss or Loss(),
        optimizer,
        Data(XOR_X, XOR_Y),
        Schedule("batch"),
        steps=steps,
        seed=1,
    )
    return harness.run(experiment)


def adam_rule(slip: str | None) -> Callable:
    """Adam written out plainly (textbook order of operations), with at most one slip planted."""

    def rule(o, p, g, s, t, lr, *, decoupled=False):
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


def sgd_rule(slip: str | None) -> Callable:
    """SGD with momentum written out plainly, with at most one slip planted."""

    def rule(o, p, g, s, t, lr):
        mu = o["momentum"]
        buf = g.copy() if "momentum_buffer" not in s else mu * s["momentum_buffer"] + (1 - o["dampening"]) * g
        if o["nesterov"] and slip != "nesterov_without_look_ahead":
            step = g + mu * buf
        else:
            step = buf  # slip (with nesterov on): the plain momentum step, no look-ahead
        return p - lr * step, {**s, "momentum_buffer": buf}

    return rule


ADAM = Optimizer("adam", 0.05, {"weight_decay": 0.01})
NESTEROV = Optimizer("sgd", 0.5, {"momentum": 0.9, "nesterov": True})


@pytest.mark.parametrize(
    ("slip", "kind", "make", "optimizer"),
    [
        ("no_bias_correction", "adam", adam_rule, ADAM),
        ("eps_inside_sqrt", "adam", adam_rule, ADAM),
        ("adamw_decay_in_adam", "adam", adam_rule, ADAM),
        ("nesterov_without_look_ahead", "sgd", sgd_rule, NESTEROV),
    ],
)
def test_optimizer_slip_caught_at_the_first_update(slip, kind, make, optimizer, monkeypatch) -> None:
    monkeypatch.setitem(optim.RULES, kind, make(slip))
    report = xor_run(optimizer)
    first = report.first
    assert first is not None, f"{slip} went unnoticed"
    # the forward, loss and backward of step 1 are untouched; the first parameter's update is not
    assert (first.step, first.term, first.phase) == (1, "dense1.W_next", "update"), first.message()
    assert first.previous_term == "input.dL_dx" and first.previous_max_abs is not None, first.message()


@pytest.mark.parametrize(
    ("kind", "make", "optimizer"),
    [
        ("adam", adam_rule, ADAM),
        ("adam", adam_rule, Optimizer("adam", 0.05, {"eps": 1e-3})),
        ("sgd", sgd_rule, NESTEROV),
    ],
)
def test_control_plain_rewrite_without_slip_agrees(kind, make, optimizer, monkeypatch) -> None:
    monkeypatch.setitem(optim.RULES, kind, make(None))
    report = xor_run(optimizer, steps=20)
    assert report.ok, report.verdict()


def test_half_dropped_from_squared_error_caught_at_the_loss(monkeypatch) -> None:
    original = losses.forward

    def forward_without_half(spec, yhat, y):
        L, cache = original(spec, yhat, y)
        return (L / 0.5 if spec.half else L), cache  # slip: Σ(ŷ − y)²/n where ½·Σ(ŷ − y)²/n was asked

    monkeypatch.setattr(losses, "forward", forward_without_half)
    report = xor_run(Optimizer("sgd", 0.5), Loss("mse", half=True))
    first = report.first
    assert first is not None and (first.step, first.term, first.phase) == (1, "loss.L", "loss")
    assert first.previous_term == "dense2.a" and first.previous_max_abs is not None, first.message()


def test_half_dropped_from_the_gradient_caught_at_the_first_backward_term(monkeypatch) -> None:
    original = losses.backward

    def backward_without_half(spec, cache, upstream=None):
        grad = original(spec, cache, upstream)
        return grad / 0.5 if spec.half else grad  # slip: 2(ŷ − y)/n where (ŷ − y)/n is ∂(½·MSE)/∂ŷ

    monkeypatch.setattr(losses, "backward", backward_without_half)
    report = xor_run(Optimizer("sgd", 0.5), Loss("mse", half=True))
    first = report.first
    assert first is not None and (first.step, first.term, first.phase) == (1, "dense2.dL_da", "backward")
    assert first.previous_term == "loss.L" and first.previous_max_abs is not None, first.message()
