"""Scenario multitask: a shared trunk, a regression head and a classification head trained jointly;
every term against torch in float64, and the trunk's gradient as the sum of the two heads'."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad import harness
from handgrad.cli import main, scenario_parser
from handgrad.hand import multitask
from handgrad.mutants.multitask import join_heads_first_only
from handgrad.scenarios import SCENARIOS

HEAD_TERMS = ("trunk.dL1_da", "trunk.dL2_da", "trunk.dL_da", "loss.L1", "loss.L2", "loss.L")


def multitask_run(*options: str, observers=()) -> harness.Report:
    experiment = SCENARIOS["multitask"].build(scenario_parser("multitask").parse_args(list(options)))
    return harness.run(experiment, observers=observers)


CASES = {
    "weights-1-0.5": ["--loss-weights", "1,0.5"],
    "weights-0.3-2-relu-online": ["--loss-weights", "0.3,2", "--activation", "relu", "--mode", "online"],
    "sigmoid-minibatch-adam": [
        "--activation", "sigmoid", "--mode", "minibatch", "--batch-size", "5", "--optimizer", "adam",
        "--lr", "0.01",
    ],
    "two-outputs-4-classes-smoothing-sum": [
        "--outputs", "2", "--classes", "4", "--label-smoothing", "0.1", "--reduction", "sum", "--lr", "0.02",
    ],
    "head2-off": ["--loss-weights", "1,0"],
    "huber-momentum-clip": ["--loss", "huber", "--momentum", "0.9", "--clip-norm", "0.5"],
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_every_multitask_term_agrees_with_torch_for_100_steps(case):
    sums: list[float] = []

    def torch_sum_check(step, hand, twin, checks):  # torch's own a.grad is the sum of its two parts
        total = twin.value("trunk.dL1_da") + twin.value("trunk.dL2_da")
        sums.append(float(np.max(np.abs(total - twin.value("trunk.dL_da")))))

    report = multitask_run(*CASES[case], "--steps", "100", observers=[torch_sum_check])
    assert report.ok, report.verdict()
    assert report.steps_run == 100
    assert all(name in report.terms for name in HEAD_TERMS)
    assert max(sums) <= 1e-15
    assert report.terms["trunk.dL1_da"].torch_source == "torch.autograd"


def test_term_order_follows_the_computation():
    report = multitask_run("--steps", "1")
    names = list(report.terms)
    assert names[:7] == ["trunk.z", "trunk.a", "head1.z", "head2.z", "loss.L1", "loss.L2", "loss.L"]
    backward = [name for name in names if report.terms[name].phase == "backward"]
    assert backward == [
        "head1.dL_dz", "head1.dL_dW", "head1.dL_db", "trunk.dL1_da",
        "head2.dL_dz", "head2.dL_dW", "head2.dL_db", "trunk.dL2_da",
        "trunk.dL_da", "trunk.dL_dz", "trunk.dL_dW", "trunk.dL_db", "input.dL_dx",
    ]  # fmt: skip


def test_planted_bug_trunk_gets_only_head_1_is_caught_at_the_trunk_gradient(monkeypatch):
    monkeypatch.setattr(multitask, "join_heads", join_heads_first_only)
    report = multitask_run("--loss-weights", "1,0.5", "--steps", "20")
    first = report.first
    assert first is not None
    assert (first.step, first.term) == (1, "trunk.dL_da"), first.message()
    assert first.previous_term == "trunk.dL2_da" and first.previous_max_abs is not None


def test_with_head_2_weighted_zero_its_contribution_is_exactly_zero():
    zeros: list[bool] = []
    report = multitask_run(
        "--loss-weights", "1,0", "--steps", "3",
        observers=[lambda s, h, t, c: zeros.append(not h.value("trunk.dL2_da").any())],
    )  # fmt: skip
    assert report.ok, report.verdict()
    assert all(zeros)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (["--loss-weights", "1"], "loss_weights"),
        (["--loss-weights", "1,-2"], "loss_weights"),
        (["--loss", "bce"], "loss"),
        (["--reduction", "none"], "reduction"),
        (["--classes", "1"], "classes"),
    ],
)
def test_bad_options_exit_2_naming_the_field(options, field, capsys):
    assert main(["compare", "multitask", *options]) == 2
    assert field in capsys.readouterr().err


def test_cli_compare_multitask_exits_0(capsys):
    assert main(["compare", "multitask", "--loss-weights", "1,0.5", "--steps", "5", "--quiet"]) == 0
    assert "all" in capsys.readouterr().out
