"""Scenario transformer (issue 17): pre-LN blocks of torch's modules, called one by one, against
the hand side at every step (LayerNorm, causal MultiheadAttention, GELU, residuals, AdamW)."""

from __future__ import annotations

import numpy as np
import pytest

from handgrad import harness
from handgrad.cli import main, scenario_parser
from handgrad.contract.transformer import build_sequences
from handgrad.gradcheck import check_scenario, gradcheck_parser
from handgrad.scenarios import SCENARIOS

SMALL = ("--n-embd", "6", "--heads", "2", "--mlp", "7", "--context", "5", "--batch-size", "3")


def transformer(*options: str) -> harness.Experiment:
    return SCENARIOS["transformer"].build(scenario_parser("transformer").parse_args(list(options)))


CASES = {
    "adamw": [],
    "two-blocks-tanh-gelu": ["--layers", "2", "--approximate", "tanh"],
    "adam-clip-cosine": ["--optimizer", "adam", "--clip-norm", "0.5", "--schedule", "cosine"],
    "one-head-sgd-momentum": ["--heads", "1", "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9"],
    "float32": ["--dtype", "float32"],
}


@pytest.mark.parametrize("case", CASES)
def test_every_transformer_term_agrees_with_torch_at_small_sizes(case):
    report = harness.run(transformer(*SMALL, "--steps", "6", *CASES[case]))
    assert report.ok, report.verdict()
    assert report.steps_run == 6


def test_terms_follow_the_computation_and_the_mask_zeroes_the_future():
    experiment = transformer(*SMALL, "--steps", "1")
    hand = experiment.hand.step(1)
    names = hand.names()
    assert names[:3] == ["emb.x", "block1.attn.weights", "block1.h1"]
    assert names.index("head.logits") < names.index("loss.L") < names.index("head.dL_dlogits")
    assert names.index("block1.dL_dx1") < names.index("emb.dL_dx") < names.index("tok.dL_dweight")
    weights = experiment.twin.step(1).value("block1.attn.weights")  # torch's, N,L,L
    assert np.all(np.triu(weights, 1) == 0)  # no position attends to a later one
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-12)


def test_cli_verdict_over_200_steps_at_the_defaults(capsys):
    assert main(["compare", "transformer", "--quiet"]) == 0
    assert "all 90 terms agree at every one of 200 steps" in capsys.readouterr().out


def test_gradcheck_reaches_transformer():
    ok, verdict, _, _ = check_scenario("transformer", gradcheck_parser("transformer").parse_args(list(SMALL)))
    assert ok, verdict


@pytest.mark.parametrize(
    "options, field", [(["--heads", "4", "--n-embd", "6"], "heads"), (["--loss", "mse"], "loss")]
)
def test_bad_options_exit_2_naming_the_field(options, field, capsys):
    assert main(["compare", "transformer", *options]) == 2
    assert field in capsys.readouterr().err


def test_windows_are_the_text_shifted_by_one():
    X, Y = build_sequences(["ab", "c"], 3)
    # text ".ab.c." → codes 0 1 2 0 3 0
    assert X.tolist() == [[0, 1, 2], [1, 2, 0], [2, 0, 3]]
    assert Y.tolist() == [[1, 2, 0], [2, 0, 3], [0, 3, 0]]


def test_workbook_is_written_with_a_trace(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    path = tmp_path / "transformer.xlsx"
    assert main(["compare", "transformer", *SMALL, "--steps", "2", "--quiet", "--xlsx", str(path)]) == 0
    assert "Trace" in openpyxl.load_workbook(path, read_only=True).sheetnames
