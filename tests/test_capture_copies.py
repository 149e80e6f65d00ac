"""A captured term keeps the value it had when its step emitted it: later steps update parameters,
optimizer state, BatchNorm buffers and gradients in place (torch and NumPy alike), and a trace that
held views of them would silently change under the observers (the workbook's Trace sheet) and under
any comparison made later. Guards every change that trades a copy for a view (issue 19)."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad.cli import scenario_parser
from handgrad.scenarios import SCENARIOS


@pytest.mark.parametrize("name", ["xor", "alexnet-mini", "parity", "multitask"])
def test_a_step_trace_is_not_changed_by_the_steps_after_it(name: str) -> None:
    experiment = SCENARIOS[name].build(scenario_parser(name).parse_args(["--steps", "4"]))
    first = [experiment.hand.step(1), experiment.twin.step(1)]
    kept = [{term.name: term.value.copy() for term in trace} for trace in first]
    for step in (2, 3, 4):
        experiment.hand.step(step)
        experiment.twin.step(step)
    for trace, values in zip(first, kept, strict=True):
        changed = [
            term.name for term in trace if not np.array_equal(term.value, values[term.name], equal_nan=True)
        ]
        assert changed == []
    # the run moved on: every side's parameters after step 4 differ from the ones step 1 emitted
    for side, trace in zip((experiment.hand, experiment.twin), first, strict=True):
        params = side.params()
        emitted = {t.name.removesuffix("_next"): t.value for t in trace if t.name.endswith("_next")}
        assert emitted and any(not np.array_equal(params[n], v) for n, v in emitted.items() if n in params)


def _kept_after_later_steps(experiment, steps: int = 4) -> list[str]:  # noqa: ANN001 (an Experiment)
    """The twin's step-1 terms whose values changed while steps 2..steps ran."""
    first = experiment.twin.step(1)
    kept = {term.name: term.value.copy() for term in first}
    for step in range(2, steps + 1):
        experiment.twin.step(step)
    return [t.name for t in first if not np.array_equal(t.value, kept[t.name], equal_nan=True)]


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("xor", ["--optimizer", "adam", "--clip-norm", "0.5"]),  # .grad read, then scaled in place
        ("xor", ["--momentum", "0.9", "--clip-value", "0.01", "--fold-bias"]),
        ("parity", ["--cell", "gru", "--layers", "2", "--lengths", "ragged", "--clip-value", "0.05"]),
        ("echo", ["--batch-first", "--layers", "2", "--optimizer", "rmsprop", "--momentum", "0.5"]),
    ],
)
def test_the_twins_trace_is_not_changed_by_later_steps_with_clipping_and_state(
    name: str, argv: list[str]
) -> None:
    """The twin keeps fresh tensors uncopied (``StepTrace.add(copy=False)``); what torch writes to in
    place later (``.grad`` under ``clip_grad_*_``, parameters, optimizer state) must be copies."""
    experiment = SCENARIOS[name].build(scenario_parser(name).parse_args([*argv, "--steps", "4"]))
    assert _kept_after_later_steps(experiment) == []


def test_batchnorm_running_statistics_are_copied_out_of_the_twin() -> None:
    """BatchNorm's running mean and variance are updated in place by every forward."""
    from handgrad.contract.normalization import BatchNorm
    from handgrad.contract.spec import Activation, Data, Dense, Network, Schedule
    from handgrad.contract.training import Loss, Optimizer
    from handgrad.scenarios.stack import stack_experiment

    rng = np.random.default_rng(0)
    network = Network((Dense(3, 4), BatchNorm(4), Activation("tanh"), Dense(4, 1)), (3,))
    data = Data(rng.standard_normal((8, 3)), rng.standard_normal((8, 1)))
    schedule = Schedule("minibatch", batch_size=4, order="shuffle", seed=0)
    experiment = stack_experiment(
        "bn", network, Loss("mse"), Optimizer("sgd", 0.1), data, schedule, steps=4, seed=0
    )
    first = experiment.twin.step(1)
    assert any(term.phase == "state" for term in first)  # the running statistics are terms
    for step in (2, 3, 4):
        experiment.twin.step(step)
    kept = experiment.twin.buffers()
    assert any(not np.array_equal(first.value(name), kept[name]) for name in kept)  # they did move
    experiment2 = stack_experiment(
        "bn", network, Loss("mse"), Optimizer("sgd", 0.1), data, schedule, steps=4, seed=0
    )
    assert _kept_after_later_steps(experiment2) == []


def test_add_without_copy_keeps_a_contiguous_array_and_copies_any_other() -> None:
    """``copy=False`` keeps a C- or F-ordered array itself; anything else is copied as ``copy=True``
    would copy it (same values, same order flags), so the stored layout never depends on the flag."""
    from handgrad.contract.trace import StepTrace

    trace = StepTrace(1)
    c_ordered = np.arange(6.0).reshape(2, 3)
    f_ordered = np.asfortranarray(c_ordered)
    strided = np.arange(12.0).reshape(3, 4)[:, ::2]
    assert trace.add("a.c", "c", "forward", c_ordered, copy=False) is c_ordered
    assert trace.add("a.f", "f", "forward", f_ordered, copy=False) is f_ordered
    stored = trace.add("a.s", "s", "forward", strided, copy=False)
    reference = np.array(strided, copy=True)
    assert stored is not strided and not np.shares_memory(stored, strided)
    assert np.array_equal(stored, reference) and stored.flags.c_contiguous == reference.flags.c_contiguous
    copied = trace.add("a.d", "d", "forward", c_ordered)  # the default copies
    c_ordered[0, 0] = 99.0
    assert copied[0, 0] == 0.0 and trace.value("a.c")[0, 0] == 99.0


def test_copied_takes_the_tensors_as_they_are_now() -> None:
    """``optim.copied`` (parameters and state off the host, brought over in one transfer): a copy
    of each tensor at the call, its shape and strides kept, untouched by later in-place updates."""
    import torch

    from handgrad.twin.optim import copied

    params = [
        torch.nn.Parameter(torch.arange(6.0, dtype=torch.float64).reshape(2, 3)),
        torch.nn.Parameter(torch.arange(6.0, dtype=torch.float64).reshape(3, 2).T),  # not contiguous
        torch.nn.Parameter(torch.tensor(3.0, dtype=torch.float64)),
    ]
    before = [param.detach().clone() for param in params]
    pick = copied(params, lambda param: param)
    with torch.no_grad():
        for param in params:
            param.add_(1.0)
    for param, value in zip(params, before, strict=True):
        taken = pick(param)
        assert torch.equal(taken, value) and taken.stride() == param.stride() and taken.device.type == "cpu"
