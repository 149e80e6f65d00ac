"""The hand side keeps the arrays its step makes uncopied in the trace (``StepTrace.add(copy=False)``,
issue 19): its layers and optimizers make new arrays and never write into old ones. A user's own
layer is not held to that, so what it returns and what flows into it is still copied: these tests
fail when one of those copies is removed (a user layer that reuses its buffers, one that scratches
in the arrays it was given), and when a built-in hand function starts writing in place."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_own_model import ScaledTanh  # out = s ⊙ tanh(x), one scale per feature
from torch import nn

from handgrad.cli import scenario_parser
from handgrad.harness import run
from handgrad.modelcheck import check_model
from handgrad.scenarios import SCENARIOS
from handgrad.scenarios.own_model import build_experiment


def _changed_by_later_steps(side, steps: int = 4) -> list[str]:  # noqa: ANN001 (a hand side)
    """The side's step-1 terms whose values changed while steps 2..steps ran."""
    first = side.step(1)
    kept = {term.name: term.value.copy() for term in first}
    for step in range(2, steps + 1):
        side.step(step)
    return [t.name for t in first if not np.array_equal(t.value, kept[t.name], equal_nan=True)]


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("xor", ["--optimizer", "adam", "--amsgrad", "--clip-norm", "0.5"]),
        ("xor", ["--momentum", "0.9", "--nesterov", "--clip-value", "0.01", "--fold-bias"]),
        ("xor", ["--optimizer", "rmsprop", "--momentum", "0.5", "--centered"]),
        ("xor", ["--optimizer", "adagrad"]),
        ("alexnet-mini", []),
        ("deep", []),
        ("parity", ["--cell", "lstm", "--layers", "2", "--lengths", "ragged"]),
        ("echo", ["--batch-first", "--cell", "gru", "--optimizer", "adam"]),
        ("multitask", []),
        ("makemore", []),
        ("transformer", []),
    ],
)
def test_the_hand_trace_is_not_changed_by_later_steps(name: str, argv: list[str]) -> None:
    """Parameters, optimizer state, activations and gradients all go into the trace uncopied."""
    experiment = SCENARIOS[name].build(scenario_parser(name).parse_args([*argv, "--steps", "4"]))
    assert _changed_by_later_steps(experiment.hand) == []


def test_the_hand_trace_keeps_batchnorm_statistics_and_adamw_state() -> None:
    from handgrad.contract.normalization import BatchNorm
    from handgrad.contract.spec import Activation, Data, Dense, Network, Schedule
    from handgrad.contract.training import Loss, Optimizer
    from handgrad.scenarios.stack import stack_experiment

    rng = np.random.default_rng(0)
    # no bias before the BatchNorm: its gradient is 0 but for rounding, which AdamW would amplify
    network = Network((Dense(3, 4, bias=False), BatchNorm(4), Activation("relu"), Dense(4, 1)), (3,))
    data = Data(rng.standard_normal((8, 3)), rng.standard_normal((8, 1)))
    schedule = Schedule("minibatch", batch_size=4, order="shuffle", seed=0)
    optimizer = Optimizer("adamw", 0.1, {"weight_decay": 0.1})

    def experiment():  # noqa: ANN202
        return stack_experiment("bn", network, Loss("mse"), optimizer, data, schedule, steps=4, seed=0)

    assert _changed_by_later_steps(experiment().hand) == []
    # the statistics were read and moved (bn1 shares its stage name with the relu after it) ...
    first = experiment().hand.step(1)
    assert not np.array_equal(first.value("bn1.running_mean"), np.zeros(4))
    # ... and every term, the uncopied ones included, is what torch computed
    report = run(experiment())
    assert report.ok, report.verdict()


# --- a user's own layer: its arrays are its own, the trace copies them ------------------------------


def _model() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 4), ScaledTanh(4), nn.Linear(4, 1))
    rng = np.random.default_rng(4)
    return model, rng.normal(size=(5, 3)), rng.normal(size=(5, 1))


def buffer_reusing_pair():  # noqa: ANN201
    """A correct hand pair that writes every result into the same arrays at every step."""
    buffers: dict[str, np.ndarray] = {}

    def buffer(key: str, like: np.ndarray) -> np.ndarray:
        if key not in buffers or buffers[key].shape != like.shape:
            buffers[key] = np.empty_like(like)
        return buffers[key]

    def forward(x, params):  # noqa: ANN001, ANN202
        t = np.tanh(x, out=buffer("t", x))
        return np.multiply(params["scale"], t, out=buffer("out", x)), (t, params["scale"])

    def backward(dout, cache):  # noqa: ANN001, ANN202
        t, scale = cache
        dscale = np.sum(dout * t, axis=0, out=buffer("dscale", scale))
        dx = np.multiply(dout * scale, 1 - t * t, out=buffer("dx", dout))
        return dx, {"scale": dscale}

    return forward, backward


def test_a_users_layer_that_reuses_its_buffers_leaves_the_trace_alone() -> None:
    model, x, y = _model()
    forward, backward = buffer_reusing_pair()
    experiment = build_experiment(
        model, x, y, steps=4, mode="batch", custom_layers={ScaledTanh: (forward, backward)}
    )
    assert _changed_by_later_steps(experiment.hand) == []
    # the buffers did move: the user's layer returned other values at step 4 than at step 1
    first, later = experiment.hand.step(1), experiment.hand.step(4)
    for name in ("scaledtanh1.out", "scaledtanh1.dL_dscale", "dense1.dL_dz"):
        assert not np.array_equal(first.value(name), later.value(name))


def test_a_users_layer_that_scratches_in_its_inputs_still_agrees_with_torch() -> None:
    """Writing into ``x`` in the forward and into ``dout`` in the backward is the user's business:
    the trace holds the values as they arrived (the output before, the gradient after)."""

    def forward(x, params):  # noqa: ANN001, ANN202
        t = np.tanh(x, out=x)  # in place: x is not needed again by this layer
        return params["scale"] * t, (t, params["scale"])

    def backward(dout, cache):  # noqa: ANN001, ANN202
        t, scale = cache
        grads = {"scale": (dout * t).sum(axis=0)}
        np.multiply(dout, scale, out=dout)  # in place: G ⊙ s
        return np.multiply(dout, 1 - t * t, out=dout), grads

    model, x, y = _model()
    report = check_model(model, x, y, steps=3, mode="batch", custom_layers={ScaledTanh: (forward, backward)})
    assert report.ok, report.verdict()
