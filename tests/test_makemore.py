"""Scenario makemore (issue 17): the makemore-part-4 MLP, embedding → linear → BatchNorm1d (training
mode) → tanh → linear → cross-entropy, every term against torch's modules at every step."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from handgrad import harness
from handgrad.cli import main, scenario_parser
from handgrad.contract.makemore import HAND_ONLY, VOCAB, build_dataset, load_names
from handgrad.contract.spec import SpecError
from handgrad.gradcheck import check_scenario, gradcheck_parser
from handgrad.scenarios import SCENARIOS

SMALL = ("--hidden", "6", "--batch-size", "5", "--n-embd", "4")
FORWARD = ["emb.emb", "emb.embcat", "hidden.hprebn", "bn.hpreact", "act.h", "output.logits", "loss.L"]
BACKWARD = [
    "output.dL_dlogits", "output.dL_dW2", "output.dL_db2", "act.dL_dh", "bn.dL_dhpreact",
    "bn.dL_dgamma", "bn.dL_dbeta", "hidden.dL_dhprebn", "hidden.dL_dW1",
    "emb.dL_dembcat", "emb.dL_demb", "emb.dL_dC",
]  # fmt: skip
BUFFERS = ["bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]


def makemore(*options: str) -> harness.Experiment:
    return SCENARIOS["makemore"].build(scenario_parser("makemore").parse_args(list(options)))


CASES = {
    "sgd": [],
    "momentum-clip-norm": ["--momentum", "0.9", "--clip-norm", "0.5"],
    "adam-cosine": ["--optimizer", "adam", "--lr", "0.01", "--schedule", "cosine"],
    "adamw-block-2": ["--optimizer", "adamw", "--lr", "0.01", "--block-size", "2"],
    "float32": ["--dtype", "float32"],
}


@pytest.mark.parametrize("case", CASES)
def test_every_makemore_term_agrees_with_torch_at_small_sizes(case):
    report = harness.run(makemore(*SMALL, "--steps", "8", *CASES[case]))
    assert report.ok, report.verdict()
    assert report.steps_run == 8


def test_term_order_follows_the_computation_and_buffers_come_from_torchs_module():
    report = harness.run(makemore(*SMALL, "--steps", "3"))
    names = list(report.terms)
    assert names[: len(FORWARD)] == FORWARD
    assert [n for n in names if report.terms[n].phase == "backward"] == BACKWARD
    assert [n for n in names if n.startswith("bn.running") or n.endswith("tracked")] == BUFFERS
    assert report.terms["bn.running_var"].torch_source == "torch.nn.BatchNorm1d"
    assert not any(name.split(".")[-1] in HAND_ONLY for name in names)  # not exposed by torch


def test_torch_buffers_move_as_documented():
    """num_batches_tracked counts the steps; the running statistics leave their initial (0, 1)."""
    experiment = makemore(*SMALL, "--steps", "2")
    twin = experiment.twin
    first, second = twin.step(1), twin.step(2)
    assert int(first.value("bn.num_batches_tracked")) == 1
    assert int(second.value("bn.num_batches_tracked")) == 2
    assert np.all(first.value("bn.running_mean") != 0)
    assert np.all(first.value("bn.running_var") != 1)


def test_hand_only_terms_are_consistent_with_torchs_terms():
    """bnraw, probs, logprobs are not in torch's trace; they must rebuild torch's hpreact and L."""
    experiment = makemore(*SMALL, "--steps", "1")
    hand, twin = experiment.hand, experiment.twin
    gamma, beta = hand.params()["bn.gamma"], hand.params()["bn.beta"]
    hand.step(1)
    torch_trace = twin.step(1)
    inside = hand.internals
    assert set(inside) == set(HAND_ONLY)
    np.testing.assert_allclose(gamma * inside["bnraw"] + beta, torch_trace.value("bn.hpreact"), rtol=1e-12)
    rows = np.asarray(hand.batches[0])
    picked = inside["logprobs"][np.arange(len(rows)), hand.Y[rows]]
    np.testing.assert_allclose(-picked.mean(), torch_trace.value("loss.L"), rtol=1e-12)
    np.testing.assert_allclose(inside["probs"].sum(axis=1), 1.0, rtol=1e-12)
    bnraw = inside["bnraw"]
    np.testing.assert_allclose(bnraw.mean(axis=0), 0.0, atol=1e-12)  # x̂ has batch mean 0
    var = inside["bnvar"]
    np.testing.assert_allclose((bnraw**2).mean(axis=0), var / (var + 1e-5), rtol=1e-10)  # biased σ²


def test_batch_of_one_is_torchs_training_error_as_a_spec_error(capsys):
    bn = torch.nn.BatchNorm1d(4).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        bn(torch.zeros(1, 4))
    with pytest.raises(SpecError) as error:
        makemore("--batch-size", "1")
    assert error.value.field == "batch_size"
    assert "more than 1 value per channel" in error.value.message
    assert main(["compare", "makemore", "--batch-size", "1"]) == 2
    assert "batch_size" in capsys.readouterr().err


@pytest.mark.parametrize("options, field", [(["--loss", "mse"], "loss"), (["--mode", "online"], "mode")])
def test_options_that_do_not_apply_are_refused_naming_them(options, field, capsys):
    assert main(["compare", "makemore", *options]) == 2
    assert field in capsys.readouterr().err


def test_cli_verdict_over_200_steps_at_the_defaults(capsys):
    assert main(["compare", "makemore", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "all 29 terms agree at every one of 200 steps" in out


def test_gradcheck_reaches_makemore():
    ok, verdict, _, _ = check_scenario("makemore", gradcheck_parser("makemore").parse_args(list(SMALL)))
    assert ok, verdict


def test_workbook_is_written_with_a_trace_and_the_batchnorm_walkthrough(tmp_path):
    """The live sheet is the BatchNorm walkthrough (tests/test_makemore_walkthrough.py recomputes
    it); no dense Walkthrough or Training sheet, and the Read me says why not."""
    openpyxl = pytest.importorskip("openpyxl")
    path = tmp_path / "makemore.xlsx"
    assert main(["compare", "makemore", *SMALL, "--steps", "2", "--quiet", "--xlsx", str(path)]) == 0
    book = openpyxl.load_workbook(path, read_only=True)
    assert {"Trace", "BatchNorm walkthrough"} <= set(book.sheetnames)
    assert not any(name.startswith(("Walkthrough", "Training")) for name in book.sheetnames)
    readme = " ".join(str(c) for row in book["Read me"].iter_rows(values_only=True) for c in row if c)
    assert "No Training sheet" in readme


def test_shipped_names_are_the_generators_and_read_as_package_data():
    script = Path(__file__).resolve().parent.parent / "scripts" / "make_names.py"
    spec = importlib.util.spec_from_file_location("make_names", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = load_names()
    assert names == module.make_names()
    assert len(names) == len(set(names)) == 300
    assert set("".join(names)) == set(VOCAB[1:])
    X, Y = build_dataset(["ab"], 3)
    assert X.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2]] and Y.tolist() == [1, 2, 0]
