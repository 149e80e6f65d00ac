"""A mismatch is diagnosed: drift (the rounding difference of two trajectories grown through the
training) or an error made at a step, by rerunning the steps up to it with ``--resync``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handgrad import cli, harness
from handgrad.harness.drift import diagnose, needs_diagnosis
from handgrad.mutants import MUTANTS
from handgrad.scenarios import SCENARIOS

# xor at ten times its hidden width: the two trajectories pass rtol 1e-10 at step 53 (and reach
# 1e-2 by step 1,000) while every step agrees to 1e-15 with --resync
DRIFTING = ["compare", "xor", "--hidden", "30", "--steps", "60"]
DIVERGING = ["--lr", "1e4", "--activation", "relu", "--output-activation", "identity"]


def test_drift_is_said_beside_an_unchanged_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "report.json"
    assert cli.main([*DRIFTING, "--json", str(path)]) == cli.EXIT_MISMATCH
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("xor: MISMATCH: ")  # the verdict stays last and unchanged
    assert lines[-2].startswith("xor: diagnosis: drift, not an error: steps 1-53 run again")
    assert "all 19 terms agree at every one of 53 steps" in lines[-2]
    report = json.loads(path.read_text())
    assert report["first_divergence"]["step"] == 53
    assert report["diagnosis"]["kind"] == "drift" and report["diagnosis"]["steps_rerun"] == 53


def test_resync_runs_and_agreeing_runs_are_not_diagnosed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "report.json"
    assert cli.main([*DRIFTING, "--resync", "--json", str(path)]) == cli.EXIT_OK
    assert json.loads(path.read_text())["diagnosis"] is None
    assert "diagnos" not in capsys.readouterr().out


def test_a_quiet_run_without_json_is_not_diagnosed(monkeypatch: pytest.MonkeyPatch) -> None:
    """--quiet prints the verdict only: a rerun nothing shows is not made."""
    monkeypatch.setattr(cli, "diagnose", lambda *_: pytest.fail("diagnosed a quiet run"))
    assert cli.main([*DRIFTING, "--quiet"]) == cli.EXIT_MISMATCH


def test_a_non_finite_run_is_not_diagnosed() -> None:
    args = cli.scenario_parser("xor").parse_args(["--steps", "200", *DIVERGING])
    report = harness.run(SCENARIOS["xor"].build(args))
    assert report.stopped is not None and not needs_diagnosis(report)


@pytest.mark.parametrize("mutant", MUTANTS[:6], ids=lambda mutant: mutant.id)
def test_a_planted_bug_is_an_error_at_its_own_step(mutant) -> None:  # noqa: ANN001
    with mutant.planted():
        report = harness.run(mutant.experiment())
        assert needs_diagnosis(report)
        diagnosis = diagnose(mutant.experiment, report)
    assert not diagnosis.drift
    assert (diagnosis.resync.first.step, diagnosis.resync.first.term) == (
        mutant.expected_step,
        mutant.expected_term,
    )
    assert diagnosis.line().startswith("diagnosis: an error, not drift: ")


WIDE_MODEL = """
import torch


def make():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 30), torch.nn.Sigmoid(), torch.nn.Linear(30, 1), torch.nn.Sigmoid()
    ).double()
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    return model, x, torch.tensor([[0.0], [1.0], [1.0], [0.0]], dtype=torch.float64)
"""


def test_a_users_model_is_diagnosed_and_takes_resync(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``handgrad check``: the wide sigmoid net at η = 2 drifts past rtol at step 44."""
    (tmp_path / "wide.py").write_text(WIDE_MODEL)
    argv = ["check", f"{tmp_path / 'wide.py'}:make", "--lr", "2", "--steps", "50"]
    assert cli.main(argv) == cli.EXIT_MISMATCH
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("wide: diagnosis: drift, not an error: steps 1-44 run again")
    assert cli.main([*argv, "--resync"]) == cli.EXIT_OK
