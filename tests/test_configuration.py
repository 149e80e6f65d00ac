"""The configuration block: read back from torch, compared with what was asked, a finding when they
differ (issue 21). tests/test_option_reach.py drives every option through it."""

from __future__ import annotations

import json

import openpyxl
import pytest
import torch

from handgrad import harness
from handgrad.cli import main, scenario_parser
from handgrad.harness.configuration import NOT_HELD, check_configuration
from handgrad.scenarios import SCENARIOS, common
from handgrad.twin import configuration


@pytest.mark.parametrize(
    ("asked", "ran", "ok"),
    [
        (0.1, 0.1, True),
        (0.1, 0.1 + 2**-56, False),  # exact: torch keeps the float it was given
        (0, 0.0, True),
        (True, True, True),
        (True, 1, False),  # a flag is a bool on both sides
        ([0.5, 0.9], (0.5, 0.9), True),
        ([0.5, 0.9], [0.5], False),
        ([1.0, 2.0], None, False),
        (None, None, True),
        ("mean", "sum", False),
    ],
)
def test_options_compare_exactly(asked: object, ran: object, ok: bool) -> None:
    (check,) = check_configuration({"option": asked}, {"option": ran})
    assert check.ok is ok


def test_an_option_torch_does_not_hold_is_a_finding() -> None:
    (check,) = check_configuration({"loss.beta": 1.0}, {})
    assert not check.ok and check.torch == NOT_HELD
    assert check.message() == f"loss.beta asked 1.0, {NOT_HELD}"


def test_values_are_read_from_the_torch_objects() -> None:
    param = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    sgd = torch.optim.SGD([param], lr=0.25, momentum=0.3, nesterov=True)
    assert configuration.optimizer_configuration(sgd) == {
        "optimizer": "sgd",
        "optimizer.lr": 0.25,
        "optimizer.momentum": 0.3,
        "optimizer.dampening": 0,
        "optimizer.weight_decay": 0,
        "optimizer.nesterov": True,
        "optimizer.maximize": False,
    }
    loss = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0]), label_smoothing=0.2, reduction="sum")
    assert configuration.loss_configuration(loss) == {
        "loss": "cross_entropy",
        "loss.reduction": "sum",
        "loss.half": False,
        "loss.weight": [1.0, 2.0],
        "loss.ignore_index": -100,
        "loss.label_smoothing": 0.2,
    }
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=7, eta_min=0.01)
    assert configuration.scheduler_configuration(scheduler) == {
        "schedule": "cosine",
        "schedule.t_max": 7,
        "schedule.eta_min": 0.01,
    }
    conv = torch.nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2, bias=False)
    assert configuration.layer_configuration("conv1", conv) == {
        "conv1.in_channels": 2,
        "conv1.out_channels": 4,
        "conv1.kernel_size": [3, 3],
        "conv1.stride": [2, 2],
        "conv1.padding": [1, 1],
        "conv1.dilation": [1, 1],
        "conv1.groups": 2,
        "conv1.bias": False,
    }
    gru = torch.nn.RNN(1, 3, num_layers=2, nonlinearity="relu", batch_first=True)
    assert configuration.recurrent_configuration(gru)["rnn.cell"] == "rnn_relu"


def _xor(*argv: str) -> harness.Experiment:
    return SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", "1", *argv]))


def test_every_scenario_reports_its_configuration_and_agrees() -> None:
    for name in SCENARIOS:
        experiment = SCENARIOS[name].build(scenario_parser(name).parse_args(["--steps", "1"]))
        report = harness.run(experiment)
        assert report.configuration, name
        assert report.ok, f"{name}: {report.verdict()}"


def test_a_difference_fails_the_verdict_naming_the_option() -> None:
    experiment = _xor()
    experiment.asked["optimizer.momentum"] = 0.9  # asked on the command line, never reached torch
    report = harness.run(experiment)
    assert not report.ok
    assert report.first is None  # every term agrees: the run trained the same wrong model
    assert report.verdict() == "MISMATCH: configuration: optimizer.momentum asked 0.9, torch ran with 0.0"
    document = report.to_json()
    assert {"option": "optimizer.momentum", "asked": 0.9, "torch": 0.0, "ok": False} in document[
        "configuration"
    ]


def test_an_option_dropped_while_the_spec_is_built_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: --momentum accepted, lost on its way into the spec; the run says so."""
    dropped = tuple(name for name in common._OPTIMIZER_OPTIONS if name != "momentum")
    monkeypatch.setattr(common, "_OPTIMIZER_OPTIONS", dropped)
    path = f"{tmp_path}/report.json"
    assert main(["compare", "xor", "--steps", "1", "--momentum", "0.9", "--quiet", "--json", path]) == 1
    assert "configuration: optimizer.momentum asked 0.9, torch ran with 0.0" in capsys.readouterr().out
    with open(path) as file:
        rows = {row["option"]: row for row in json.load(file)["configuration"]}
    assert rows["optimizer.momentum"] == {
        "option": "optimizer.momentum",
        "asked": 0.9,
        "torch": 0.0,
        "ok": False,
    }


def test_the_parameters_sheet_shows_asked_and_torch(tmp_path: object) -> None:
    path = f"{tmp_path}/run.xlsx"
    argv = ["compare", "xor", "--steps", "1", "--quiet", "--clip-norm", "1", "--norm-type", "inf"]
    assert main([*argv, "--xlsx", path]) == 0
    sheet = openpyxl.load_workbook(path)["Parameters"]
    rows = [row[:4] for row in sheet.iter_rows(values_only=True)]
    assert ("option", "asked for", "torch ran with", "ok") in rows
    assert ("optimizer.lr", "2.0", "2.0", "ok") in rows  # xor's default η (the demo learns XOR)
    assert ("clip.norm_type", "inf", "inf", "ok") in rows
