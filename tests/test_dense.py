"""The dense stack, hand vs real torch.nn, term by term at every step, in float64."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad import harness
from handgrad.contract.spec import ACTIVATIONS, Data, Network, Schedule
from handgrad.contract.training import Loss, Optimizer
from handgrad.hand import activations
from handgrad.hand.network import init_params
from handgrad.mutants.stack import derivative_sigmoid_from_z
from handgrad.scenarios.dense import XOR_X, XOR_Y
from handgrad.scenarios.stack import stack_experiment

LOSSES = {
    "mse-mean": Loss("mse", "mean"),
    "mse-sum-half": Loss("mse", "sum", half=True),
    "bce": Loss("bce", "mean"),
}
SCHEDULES = {
    "online": Schedule("online"),
    "online-shuffled": Schedule("online", order="shuffle", seed=3),
    "batch": Schedule("batch"),
    "minibatch-3": Schedule("minibatch", batch_size=3, order="shuffle", seed=5),
}


def xor_run(
    activation: str = "sigmoid",
    loss: Loss = LOSSES["mse-mean"],
    schedule: Schedule = SCHEDULES["online"],
    *,
    fold_bias: bool = False,
    steps: int = 200,
    lr: float = 0.5,
    params: dict[str, np.ndarray] | None = None,
    data: Data | None = None,
    sizes: tuple[int, ...] = (2, 3, 1),
    output_activation: str = "sigmoid",
) -> harness.Report:
    network = Network.mlp(list(sizes), activation, output_activation, slope=0.05, fold_bias=fold_bias)
    data = data or Data(XOR_X, XOR_Y)
    experiment = stack_experiment(
        "xor", network, loss, Optimizer("sgd", lr), data, schedule, steps=steps, seed=7, params=params
    )
    return harness.run(experiment)


@pytest.mark.parametrize("fold_bias", [False, True], ids=["bias", "folded"])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_combination_agrees_for_200_steps(activation, loss, schedule, fold_bias):
    report = xor_run(activation, LOSSES[loss], SCHEDULES[schedule], fold_bias=fold_bias)
    assert report.ok, report.verdict()
    assert report.steps_run == 200
    assert "dense1.dL_dWt" in report.terms if fold_bias else "dense1.dL_db" in report.terms


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "leaky_relu", "identity"])
def test_ten_thousand_online_xor_steps_stay_within_1e12(activation):
    report = xor_run(activation, steps=10_000, lr=0.5)
    assert report.ok, report.verdict()
    assert report.largest_rel <= 1e-12, {n: s.max_rel for n, s in report.terms.items()}


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_units_exactly_on_the_kink(activation):
    """A hidden unit whose z is exactly 0 at every step: relu′(0) = 0 and leaky′(0) = slope, as torch."""
    params = init_params(Network.mlp([2, 3, 1], activation), seed=1)
    params["dense1.W"][1] = 0.0
    params["dense1.b"][1] = 0.0
    report = xor_run(activation, params=params, steps=50)
    assert report.ok, report.verdict()


def test_mlp_with_wider_layers_and_random_data():
    rng = np.random.default_rng(11)
    data = Data(rng.normal(size=(10, 5)), rng.uniform(0.05, 0.95, size=(10, 3)))
    report = xor_run("tanh", LOSSES["bce"], SCHEDULES["minibatch-3"], data=data, sizes=(5, 7, 4, 3))
    assert report.ok, report.verdict()


def test_planted_sigmoid_bug_is_named_at_the_right_step_term_and_element(monkeypatch):
    monkeypatch.setattr(activations, "derivative", derivative_sigmoid_from_z)
    report = xor_run("sigmoid", steps=20)
    assert not report.ok
    first = report.first
    assert (first.step, first.term) == (1, "dense2.dL_dz")
    assert first.previous_term == "dense2.dL_da" and first.previous_max_abs is not None
    assert first.index == (0, 0)
    assert "1 / 1 elements differ" in first.message()
    assert "dense2.dL_dz" in report.verdict()


def test_resync_judges_each_step_on_its_own(monkeypatch):
    monkeypatch.setattr(activations, "derivative", derivative_sigmoid_from_z)
    network = Network.mlp([2, 3, 1])
    experiment = stack_experiment(
        "xor", network, Loss(), Optimizer("sgd", 0.5), Data(XOR_X, XOR_Y), Schedule(), steps=5, seed=0
    )
    report = harness.run(experiment, resync=True)
    assert report.terms["dense2.z"].failing_steps == 0  # the forward pass is right at every step
    assert report.terms["dense2.dL_dz"].failing_steps == 5


def test_online_order_cycles_and_shuffles_per_epoch():
    assert [list(b) for b in Schedule("online").batches(3, 5)] == [[0], [1], [2], [0], [1]]
    shuffled = Schedule("online", order="shuffle", seed=1).batches(4, 8)
    assert sorted(int(b[0]) for b in shuffled[:4]) == [0, 1, 2, 3]
    assert sorted(int(b[0]) for b in shuffled[4:]) == [0, 1, 2, 3]
    minibatches = Schedule("minibatch", batch_size=3).batches(4, 3)
    assert [list(b) for b in minibatches] == [[0, 1, 2], [3], [0, 1, 2]]


def test_non_finite_values_are_a_finding_not_a_pass():
    report = xor_run(
        "identity", LOSSES["mse-mean"], SCHEDULES["batch"], lr=1e4, steps=2000, output_activation="identity"
    )
    assert not report.ok
    assert report.stopped is not None and report.stopped.startswith("non-finite at step")
    assert report.first is not None and report.first.non_finite in {"hand", "torch", "both"}


def test_planted_bug_makes_the_cli_exit_1(monkeypatch, capsys):
    from handgrad.cli import main

    monkeypatch.setattr(activations, "derivative", derivative_sigmoid_from_z)
    assert main(["compare", "xor", "--steps", "5", "--quiet"]) == 1
    assert "MISMATCH" in capsys.readouterr().out
