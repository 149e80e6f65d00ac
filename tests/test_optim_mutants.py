"""Planted bugs, one at a time: each textbook slip must be caught, at the term where it first shows.

A mutant replaces one hand rule (``optim.RULES[kind]``, ``losses.forward`` / ``losses.backward``)
for the length of a test; the harness must then report its first divergence at step 1 in the
expected term, with every term before it in agreement. A control runs the same rewritten rule
without the slip and must agree, so what is caught is the slip and not the rewrite.
"""

from __future__ import annotations

import pytest

from handgrad import harness
from handgrad.contract.spec import Data, Network, Schedule
from handgrad.contract.training import Loss, Optimizer
from handgrad.hand import losses, optim
from handgrad.mutants.optimizers import adam_rule, sgd_rule
from handgrad.mutants.stack import loss_backward_mse_without_half, loss_forward_mse_without_half
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
    monkeypatch.setattr(losses, "forward", loss_forward_mse_without_half)
    report = xor_run(Optimizer("sgd", 0.5), Loss("mse", half=True))
    first = report.first
    assert first is not None and (first.step, first.term, first.phase) == (1, "loss.L", "loss")
    assert first.previous_term == "dense2.a" and first.previous_max_abs is not None, first.message()


def test_half_dropped_from_the_gradient_caught_at_the_first_backward_term(monkeypatch) -> None:
    monkeypatch.setattr(losses, "backward", loss_backward_mse_without_half)
    report = xor_run(Optimizer("sgd", 0.5), Loss("mse", half=True))
    first = report.first
    assert first is not None and (first.step, first.term, first.phase) == (1, "dense2.dL_da", "backward")
    assert first.previous_term == "loss.L" and first.previous_max_abs is not None, first.message()
