"""The console's term table stays readable at any size: at most ``cli.TABLE_ROWS`` rows, the
failing terms (by torch or by finite differences) first, then the largest errors, and a line that
counts what it left out; ``--all-terms`` prints every row."""

from __future__ import annotations

import re

import pytest

from handgrad import cli, harness
from handgrad.gradcheck import FDResult
from handgrad.harness.report import TermStats
from handgrad.oracle import OracleCheck
from handgrad.scenarios import SCENARIOS

ROW = re.compile(r"^(\S+)\s+(forward|backward|update|state|loss|input|diagnostic)\s")


def _rows(table: str) -> list[str]:
    return [match.group(1) for line in table.splitlines() if (match := ROW.match(line))]


def _report(count: int) -> harness.Report:
    """xor's report with ``count`` synthetic terms, term k's rel error k·1e-16 (k = 1 … count)."""
    report = harness.run(SCENARIOS["xor"].build(cli.scenario_parser("xor").parse_args(["--steps", "1"])))
    report.terms = {
        f"t{k}": TermStats(f"t{k}", "t", "backward", "hand", "torch", (1,), 1e-17, k * 1e-16, 0.0)
        for k in range(1, count + 1)
    }
    return report


def test_a_table_within_the_limit_is_whole() -> None:
    report = _report(cli.TABLE_ROWS)
    table = cli._format_table(report)
    assert _rows(table) == list(report.terms)
    assert "more terms not shown" not in table


def test_a_long_table_keeps_failing_terms_then_the_largest_errors_in_order() -> None:
    report = _report(1000)
    report.terms["t7"].failing_steps = 3  # failing by torch, small figures
    fd_fail = OracleCheck("t", "elementwise", 0.5, (0,), 0.25, 0.75, 1, 1)
    report.oracle = [FDResult(1, "t3", fd_fail)]  # failing by finite differences only
    table = cli._format_table(report)
    rows = _rows(table)
    assert len(rows) == cli.TABLE_ROWS
    largest = [f"t{k}" for k in range(1000 - cli.TABLE_ROWS + 3, 1001)]
    assert rows == ["t3", "t7", *largest]  # the report's order
    assert table.splitlines()[-1] == (
        "… 800 more terms not shown (all agreeing; their largest rel error 8.0e-14): "
        "--all-terms prints every row, --json FILE writes every term"
    )
    assert _rows(cli._format_table(report, None)) == list(report.terms)


@pytest.mark.parametrize("all_terms", [False, True])
def test_a_long_sequence_prints_a_bounded_table(all_terms: bool, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", "parity", "--length", "30", "--steps", "2", *(["--all-terms"] if all_terms else [])]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    terms = int(re.search(r"all (\d+) terms agree", out).group(1))
    assert terms > cli.TABLE_ROWS
    assert len(_rows(out)) == (terms if all_terms else cli.TABLE_ROWS)
    assert ("more terms not shown" in out) is not all_terms
