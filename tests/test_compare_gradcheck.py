"""``handgrad compare --gradcheck``: the third column, hand vs torch vs finite differences.

The FD column is present for every parameter gradient and the input gradient; it leaves the
lock-step run undisturbed; a bug planted in the hand backward is flagged by the torch column and
the FD column on the same terms; an FD failure alone makes the verdict a mismatch; a bad value is
one error line and exit 2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from handgrad import cli, harness
from handgrad.gradcheck import INPUT, CompareOracle, FDResult, _grad_term
from handgrad.mutants import MUTANTS
from handgrad.oracle import FD_ATOL, FD_RTOL, OracleCheck
from handgrad.scenarios import SCENARIOS


def table_rows(out: str) -> dict[str, tuple[str, list[str]]]:
    """term -> (its torch column, its FD column split: [] or ["ok"|"FAIL", max |hand − FD|])."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("term "))
    header = lines[start]
    assert header.endswith("  FD"), header
    ok_at, fd_at = header.index("  ok") + 2, len(header) - 2
    rows = {}
    for line in lines[start + 1 :]:
        if ": " in line:  # the verdict and notes
            break
        rows[line.split()[0]] = (line[ok_at:fd_at].strip(), line[fd_at:].split())
    return rows


def gradient_terms(name: str, argv: list[str], input_term: str | None) -> set[str]:
    args = cli.scenario_parser(name).parse_args(argv)
    hand = SCENARIOS[name].build_hand(args).hand
    return {_grad_term(param) for param in hand.params()} | ({input_term} if input_term else set())


@pytest.mark.parametrize(
    ("name", "argv", "steps", "input_term"),
    [
        ("xor", ["--steps", "3"], [1, 3], "input.dL_dx"),
        ("mlp", ["--steps", "2", "--fold-bias"], [2], "input.dL_dx"),
        ("parity", ["--steps", "2", "--cell", "gru"], [1, 2], "gru1.dL_dx"),
        ("echo", ["--steps", "1", "--batch-first"], [1], "lstm1.dL_dx"),
        ("alexnet-mini", ["--steps", "2", "--samples", "8"], [1, 2], None),  # x on max-pool ties
        ("multitask", ["--steps", "2", "--optimizer", "adam"], [2], "input.dL_dx"),
    ],
)
def test_fd_column_for_every_gradient_term(name, argv, steps, input_term, tmp_path, capsys) -> None:
    out_json = tmp_path / "report.json"
    option = ["--gradcheck", ",".join(map(str, steps))]
    code = cli.main(["compare", name, *argv, *option, "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0, out
    expected = gradient_terms(name, argv, input_term)
    fd_cells = {term: fd for term, (_, fd) in table_rows(out).items() if fd}
    assert set(fd_cells) == expected, out
    assert all(cells[0] == "ok" and float(cells[1]) < 1e-6 for cells in fd_cells.values()), out
    assert "finite differences agree on all" in out.splitlines()[-1]
    oracle = json.loads(out_json.read_text())["oracle"]
    assert oracle["ok"] is True
    assert {(c["step"], c["term"]) for c in oracle["checks"]} == {(s, t) for s in steps for t in expected}
    assert all(c["tolerance"] == {"atol": FD_ATOL, "rtol": FD_RTOL} and c["ok"] for c in oracle["checks"])
    if input_term is None:
        assert "input.x not checked by finite differences" in out
    else:
        assert {c["checked"] for c in oracle["checks"] if c["term"] == input_term} == {INPUT}


def test_without_the_option_the_table_and_json_are_unchanged(tmp_path, capsys) -> None:
    out_json = tmp_path / "report.json"
    assert cli.main(["compare", "xor", "--steps", "2", "--json", str(out_json)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split()[-1] == "ok"
    assert json.loads(out_json.read_text())["oracle"] is None


@pytest.mark.parametrize(
    ("name", "argv", "steps"),
    [
        ("xor", ["--steps", "4", "--optimizer", "adam", "--lr", "0.05"], [1, 2, 4]),
        ("parity", ["--steps", "3", "--optimizer", "sgd", "--momentum", "0.9"], [2, 3]),
        ("deep", ["--steps", "2", "--depth", "2", "--width", "5"], [1, 2]),
    ],
)
def test_the_check_leaves_the_lock_step_run_undisturbed(name, argv, steps) -> None:
    args = cli.scenario_parser(name).parse_args(argv)
    plain = harness.run(SCENARIOS[name].build(args))
    experiment = SCENARIOS[name].build(args)
    oracle = CompareOracle(experiment, steps)
    oracle.before_run()
    checked = harness.run(experiment, observers=[oracle.observe])
    assert sorted({result.step for result in oracle.results(checked.steps_run)}) == steps
    assert checked.loss_history == plain.loss_history
    for side in ("hand", "torch"):
        for param, value in plain.final_params[side].items():
            np.testing.assert_array_equal(checked.final_params[side][param], value, err_msg=param)


EVERY_XOR_GRADIENT = {"dense2.dL_dW", "dense2.dL_db", "dense1.dL_dW", "dense1.dL_db", "input.dL_dx"}


@pytest.mark.parametrize(
    ("plant", "flagged"),
    [
        ("sigmoid-prime-from-z", EVERY_XOR_GRADIENT),  # xor, full batch: every gradient is off
        ("mse-lost-factor-2", EVERY_XOR_GRADIENT),
        ("dense-db-wrong-axis", {"dense2.dL_db", "dense1.dL_db"}),  # mlp 3-4-4, minibatches of 4
    ],
)
def test_a_planted_hand_bug_is_flagged_by_torch_and_fd_on_the_same_terms(plant, flagged, tmp_path, capsys):
    mutant = {m.id: m for m in MUTANTS}[plant]
    out_json = tmp_path / "report.json"
    argv = ["compare", mutant.scenario, *mutant.argv, "--gradcheck", "1,2", "--json", str(out_json)]
    with mutant.planted():
        code = cli.main(argv)
    out = capsys.readouterr().out
    assert code == 1, out
    rows = table_rows(out)
    fd_failing = {term for term, (_, fd) in rows.items() if fd and fd[0] == "FAIL"}
    torch_failing = {term for term, (ok, _) in rows.items() if ok.startswith("FAIL")}
    assert fd_failing == flagged, out
    assert fd_failing <= torch_failing, out
    verdict = out.splitlines()[-1]
    assert "gradient checks disagree with finite differences" in verdict
    oracle = json.loads(out_json.read_text())["oracle"]
    assert oracle["ok"] is False
    assert {c["term"] for c in oracle["checks"] if not c["ok"]} == fd_failing


def test_an_fd_failure_alone_makes_the_verdict_a_mismatch() -> None:
    """torch is the other reference, so a bug both columns miss cannot be planted in the hand pass;
    the report's rule is checked on a run whose torch column agrees and one FD finding fails."""
    args = cli.scenario_parser("xor").parse_args(["--steps", "1"])
    report = harness.run(SCENARIOS["xor"].build(args))
    assert report.ok
    bad = OracleCheck("dense1.W", "elementwise", 0.5, (1, 0), 0.25, 0.75, 1, 6)
    good = OracleCheck("dense1.b", "elementwise", 1e-11, (0,), 0.1, 0.1, 0, 3)
    report.oracle = [FDResult(1, "dense1.dL_db", good), FDResult(1, "dense1.dL_dW", bad)]
    assert not report.ok
    assert report.verdict().startswith(
        "MISMATCH: 1 of 2 gradient checks disagree with finite differences; first: step 1, dense1.dL_dW: "
        "dense1.W (elementwise, 6 checks): 1 disagree"
    )
    table = cli._format_table(report)
    assert "FAIL 5.0e-01" in next(line for line in table.splitlines() if line.startswith("dense1.dL_dW "))
    assert json.loads(json.dumps(report.to_json()))["oracle"]["ok"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gradcheck", "one"], "gradcheck: expected comma-separated step numbers, got 'one'"),
        (["--gradcheck", "0"], "gradcheck: expected steps ≥ 1, got 0"),
        (["--gradcheck", "1,-3"], "gradcheck: expected steps ≥ 1, got -3"),
        (["--gradcheck", "1,9"], "gradcheck: step 9 is past the last step (3)"),
        (["--gradcheck", "--dtype", "float32"], "gradcheck: needs --dtype float64"),
    ],
)
def test_bad_gradcheck_value_is_one_line_and_exit_2(argv, message, tmp_path, capsys) -> None:
    out_json = tmp_path / "report.json"
    code = cli.main(["compare", "xor", "--steps", "3", *argv, "--json", str(out_json)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("handgrad: error: ") and message in err, err
    assert not out_json.exists()
