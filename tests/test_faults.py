"""Faults: divergence is a finding (exit 1), interrupted writes leave the old file or the whole new
one, and Ctrl-C exits 130 with one line.

The kill loops fork the test process (so each try costs a write, not a Python start-up) and send
SIGKILL or SIGINT after a delay drawn from a seeded RNG over the measured length of a write.
``HANDGRAD_FAULT_ITERATIONS`` sets the tries per signal and file kind (default 5; the issue's 50
with ``HANDGRAD_FAULT_ITERATIONS=50``).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from openpyxl import load_workbook

from handgrad import cli, harness
from handgrad.cli import scenario_parser
from handgrad.scenarios import SCENARIOS
from handgrad.workbook.writer import write_workbook

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "reference")}
ITERATIONS = int(os.environ.get("HANDGRAD_FAULT_ITERATIONS", "5"))
NON_FINITE = re.compile(r"non-finite at step (\d+) in (\S+) \((hand|torch|both)\)")
NEW_STEPS = 150
DIVERGING = ["--lr", "1e4", "--activation", "relu", "--output-activation", "identity"]


# --- divergence is a finding, not a crash ---------------------------------------------------------


def test_a_diverging_run_is_reported_non_finite_with_exit_1_and_still_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    book_path, json_path = tmp_path / "blowup.xlsx", tmp_path / "blowup.json"
    argv = ["compare", "xor", "--steps", "200", *DIVERGING, "--quiet"]
    status = cli.main([*argv, "--xlsx", str(book_path), "--json", str(json_path)])
    out, err = capsys.readouterr()
    assert status == cli.EXIT_MISMATCH, (out, err)
    found = NON_FINITE.search(out)
    assert found, out
    step, term = int(found.group(1)), found.group(2)
    assert f"stopped early: non-finite at step {step} in {term}" in out
    assert "Traceback" not in err
    report = json.loads(json_path.read_text())  # strict JSON: no NaN literal anywhere
    assert report["ok"] is False and report["steps_run"] == step
    assert NON_FINITE.fullmatch(report["stopped"]).group(1) == str(step)
    assert report["first_divergence"]["non_finite"] in ("hand", "torch", "both")
    book = load_workbook(book_path, read_only=True)  # written with what happened up to that step
    steps = {row[0] for row in book["Trace"].iter_rows(min_row=2, values_only=True)}
    summary = [v for row in book["Summary"].iter_rows(values_only=True) for v in row if isinstance(v, str)]
    book.close()
    assert steps == set(range(1, step + 1))
    assert any("non-finite" in text for text in summary)


def test_non_finite_values_are_never_compared_as_equal():
    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", "200", *DIVERGING]))
    report = harness.run(experiment)
    assert not report.ok and report.stopped and report.first is not None
    assert report.first.non_finite in ("hand", "torch", "both")
    assert report.steps_run < 200  # stopped at the first non-finite step, not run on with NaN
    verdict = report.verdict()
    if report.first.non_finite == "both":  # a finding of its own, never a count of terms
        assert verdict.startswith(f"both diverged at step {report.first.step} ({report.first.term})")
    else:
        assert verdict.startswith("MISMATCH: non-finite at step")
    assert "terms disagree" not in verdict


# --- interrupted writes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs():
    """A 2-step run (the old file) and a longer one (the new file) of xor, with every step's traces."""
    made = {}
    for steps in (2, NEW_STEPS):
        experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", str(steps)]))
        captured: dict = {}

        def keep(k, hand, torch, checks, captured=captured):
            captured[k] = (hand, torch)

        report = harness.run(experiment, observers=[keep])
        made[steps] = (experiment, report, captured)
    return made


def _writers(runs) -> dict[str, tuple[Callable[[Path, int], None], Callable[[Path], object]]]:
    def workbook(path: Path, steps: int) -> None:
        experiment, report, captured = runs[steps]
        write_workbook(path, experiment, report, captured)

    def report_json(path: Path, steps: int) -> None:
        cli._write_json(str(path), runs[steps][1])

    def read_workbook(path: Path) -> object:
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None
        book = load_workbook(path, read_only=True)
        last = max(row[0] for row in book["Trace"].iter_rows(min_row=2, values_only=True))
        book.close()
        return last

    def read_json(path: Path) -> object:
        return json.loads(path.read_text())["steps_run"]

    return {"workbook": (workbook, read_workbook), "json": (report_json, read_json)}


def _fork_write(write: Callable[[Path, int], None], target: Path, steps: int) -> int:
    """Fork a child that writes ``target`` and exits 0 (130 on KeyboardInterrupt); return its pid.
    SIGINT stays blocked until the child is inside its try block, so it never reaches pytest."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            write(target, steps)
            code = 0
        except KeyboardInterrupt:
            code = cli.EXIT_INTERRUPTED
        finally:
            os._exit(code)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    return pid


@pytest.mark.parametrize("kind", ["workbook", "json"])
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_an_interrupted_write_leaves_the_old_file_or_the_whole_new_one(runs, tmp_path: Path, kind, signum):
    write, read = _writers(runs)[kind]
    target = tmp_path / f"out.{'xlsx' if kind == 'workbook' else 'json'}"
    write(target, 2)
    old = target.read_bytes()
    start = time.perf_counter()
    write(tmp_path / f"timing-{target.name}", NEW_STEPS)
    duration = time.perf_counter() - start
    rng = random.Random(f"{kind}-{signum}")  # seeded: the same moments every run
    outcomes = {"old": 0, "new": 0}
    for _ in range(ITERATIONS):
        target.write_bytes(old)
        pid = _fork_write(write, target, NEW_STEPS)
        time.sleep(rng.uniform(0.0, 1.2 * duration))
        os.kill(pid, signum)
        _, status = os.waitpid(pid, 0)
        if signum == signal.SIGKILL:
            assert os.WIFSIGNALED(status) or os.WEXITSTATUS(status) == 0
        else:
            assert os.WEXITSTATUS(status) in (0, cli.EXIT_INTERRUPTED), status
        if target.read_bytes() == old:
            outcomes["old"] += 1
        else:
            assert read(target) == NEW_STEPS  # complete and valid: the new run's last step is there
            outcomes["new"] += 1
    print(f"\n{kind} {signal.Signals(signum).name} x{ITERATIONS}: {outcomes} (write takes {duration:.3f} s)")
    assert sum(outcomes.values()) == ITERATIONS


def test_ctrl_c_exits_130_with_one_line_and_leaves_the_output_alone(tmp_path: Path):
    target = tmp_path / "out.xlsx"
    target.write_bytes(b"the old workbook")
    driver = "import sys\nfrom handgrad import cli\nprint('READY', flush=True)\n"
    driver += "sys.exit(cli.main(sys.argv[1:]))\n"
    command = [sys.executable, "-c", driver, "compare", "xor", "--steps", "100000", "--quiet"]
    process = subprocess.Popen(
        [*command, "--xlsx", str(target), "--json", str(tmp_path / "r.json")],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout.readline().strip() == "READY"
    time.sleep(3.0)  # well into the run
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == cli.EXIT_INTERRUPTED, (out, err)
    assert err.strip().splitlines() == ["handgrad: interrupted; no output file was changed"]
    assert target.read_bytes() == b"the old workbook"
    assert not (tmp_path / "r.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.xlsx"]
