"""`make demo` learns XOR, says so, and its Walkthrough shows a step where every gradient moves."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from openpyxl import load_workbook

from handgrad import cli, harness
from handgrad.cli import scenario_parser
from handgrad.scenarios import SCENARIOS
from handgrad.scenarios.dense import XOR_X, XOR_Y
from handgrad.workbook.writer import WorkbookWriter

ROOT = Path(__file__).resolve().parent.parent


def demo_arguments() -> list[str]:
    """The options `make demo` passes to ``handgrad compare xor``, less its output files."""
    line = next(
        line for line in (ROOT / "Makefile").read_text().splitlines() if "handgrad compare xor" in line
    )
    words = shlex.split(line.split("handgrad compare xor", 1)[1])
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("--json", "--xlsx"):
            skip = True
        else:
            kept.append(word)
    return kept


def test_make_demo_prints_four_predictions_within_a_tenth(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["compare", "xor", *demo_arguments()]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("xor: all 19 terms agree"), out  # the verdict stays last
    title = out.index("xor: final predictions")
    table = out[title:].splitlines()[1:]  # the table's title, then its header
    rows = [re.split(r"\s{2,}", line.strip()) for line in table[1:5]]
    assert [row[0] for row in rows] == ["0, 0", "0, 1", "1, 0", "1, 1"], out
    for row, target in zip(rows, XOR_Y[:, 0], strict=True):
        assert float(row[1]) == target
        hand, torch = float(row[2]), float(row[3])
        assert abs(hand - target) < 0.1, f"x = {row[0]}: ŷ = {hand}, target {target}"
        assert abs(torch - target) < 0.1, f"x = {row[0]}: torch ŷ = {torch}, target {target}"


def test_predictions_are_each_sides_forward_pass_at_the_final_weights() -> None:
    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", "30"]))
    report = harness.run(experiment)
    predictions = report.predictions
    assert predictions is not None
    final = report.final_params["hand"]
    hidden = 1 / (1 + np.exp(-(XOR_X @ final["dense1.W"].T + final["dense1.b"])))
    expected = 1 / (1 + np.exp(-(hidden @ final["dense2.W"].T + final["dense2.b"])))
    harness.assert_values_match("ŷ hand", predictions.hand, expected, experiment.tolerance)
    harness.assert_values_match("ŷ torch", predictions.torch, expected, experiment.tolerance)


def _written(tmp_path: Path, *options: str, walkthrough: list[int] | None = None) -> WorkbookWriter:
    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", "20", *options]))
    writer = WorkbookWriter(experiment, walkthrough_steps=walkthrough)
    try:
        report = harness.run(experiment, observers=[writer.observe])
        writer.write(tmp_path / "xor.xlsx", report)
    finally:
        writer.close()
    return writer


@pytest.mark.parametrize("options", [(), ("--activation", "relu"), ("--mode", "batch")])
def test_default_walkthrough_step_has_no_all_zero_gradient(tmp_path: Path, options: tuple[str, ...]) -> None:
    writer = _written(tmp_path, *options)
    [step] = writer.walkthrough_steps
    hand, _ = writer.captured[step]
    zero = [term.name for term in hand if term.phase == "backward" and not np.any(term.value)]
    assert zero == [], f"step {step}: {zero} are zero everywhere"


def test_online_xor_skips_step_one_whose_input_is_zero(tmp_path: Path) -> None:
    writer = _written(tmp_path)
    assert not np.any(XOR_X[0])  # step 1 feeds (0, 0): ∂L/∂W⁽¹⁾ = δ⁽¹⁾ xᵀ = 0
    assert writer.walkthrough_steps == [2]


def test_walkthrough_step_option_chooses_the_step(tmp_path: Path) -> None:
    path = tmp_path / "xor.xlsx"
    options = ["--steps", "5", "--quiet", "--xlsx", str(path), "--walkthrough-step", "3"]
    assert cli.main(["compare", "xor", *options]) == 0
    book = load_workbook(path, read_only=True)
    assert [name for name in book.sheetnames if name.startswith("Walkthrough")] == ["Walkthrough 3"]
    book.close()
