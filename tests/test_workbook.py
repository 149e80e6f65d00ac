"""The workbook as a file: sheets, the streamed Trace, determinism, atomic writes, limits, user text.

(Recomputing the formulas in LibreOffice is in test_recalc.py.)
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from openpyxl import load_workbook
from openpyxl.worksheet.formula import ArrayFormula

from handgrad import cli, harness
from handgrad.cli import scenario_parser
from handgrad.scenarios import SCENARIOS
from handgrad.workbook.grid import Grid
from handgrad.workbook.package import save
from handgrad.workbook.tracesheet import COLUMNS
from handgrad.workbook.writer import Book, WorkbookWriter, check_runs, write_grid
from handgrad.workbook.xlsx import DOCUMENT_TIME, ZIP_TIME, ExcelLimitError, SheetData, check_title

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "reference")}


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def xor(*options: str):
    return SCENARIOS["xor"].build(scenario_parser("xor").parse_args(list(options)))


def write_run(path: Path, *options: str, rows_per_sheet: int | None = None, walkthrough=(1,)):
    """Run xor with the workbook streaming from it; return (report, hand traces of every step)."""
    experiment = xor(*options)
    kwargs = {"rows_per_sheet": rows_per_sheet} if rows_per_sheet else {}
    writer = WorkbookWriter(experiment, walkthrough_steps=walkthrough, **kwargs)
    traces: list = []
    try:
        report = harness.run(
            experiment,
            observers=[writer.observe, lambda step, hand, torch, checks: traces.append((hand, torch))],
        )
        writer.write(path, report)
    finally:
        writer.close()
    return report, traces


def _label(index: tuple[int, ...]) -> str:
    """The Trace's index text: 1-based, as every sheet counts."""
    return "[" + ",".join(str(i + 1) for i in index) + "]"


def trace_rows(path: Path) -> list[tuple]:
    book = load_workbook(path, read_only=True)
    rows = []
    for title in book.sheetnames:
        if title.startswith("Trace"):
            sheet_rows = list(book[title].iter_rows(values_only=True))
            assert sheet_rows[0] == COLUMNS, title
            rows.extend(sheet_rows[1:])
    book.close()
    return rows


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("small") / "xor.xlsx"
    report, traces = write_run(path, "--steps", "6", walkthrough=(1, 4))
    return path, report, traces


# --- sheets and the Trace ---------------------------------------------------------------------


def test_sheets_come_in_reading_order_with_helpers_hidden(small):
    path, _, _ = small
    book = load_workbook(path)
    assert book.sheetnames == [
        "Summary", "Walkthrough", "Walkthrough 4", "Training", "Trace",
        "Parameters", "Read me", "Chart data", "Checks",
    ]  # fmt: skip
    hidden = {sheet.title for sheet in book.worksheets if sheet.sheet_state == "hidden"}
    assert hidden == {"Chart data", "Checks"}
    assert book.active.title == "Summary"


def test_trace_holds_every_element_of_every_term_of_every_step(small):
    path, report, traces = small
    rows = trace_rows(path)
    expected = []
    for hand, torch in traces:
        for term in hand:
            layer, _, short = term.name.partition(".")
            h, t = term.value.reshape(-1), torch[term.name].value.reshape(-1)
            labels = [None] if term.value.ndim == 0 else [_label(i) for i in np.ndindex(term.value.shape)]
            for k, label in enumerate(labels):
                expected.append((hand.step, term.phase, layer, short, label, float(h[k]), float(t[k])))
    assert [row[:7] for row in rows] == expected  # every bit of every number: 17 digits
    for row in rows:
        diff = abs(row[5] - row[6])
        assert row[7] == pytest.approx(diff, rel=1e-5, abs=0)  # |Δ| is shown with 6 digits
        assert row[9] == ("ok" if diff <= 1e-12 + 1e-10 * abs(row[6]) else "FAIL")


def test_trace_is_an_excel_table_with_a_header(small):
    path, _, traces = small
    sheet = load_workbook(path)["Trace"]
    (table,) = sheet.tables.values()
    rows = sum(term.value.size for hand, _ in traces for term in hand)
    assert table.ref == f"A1:J{rows + 1}"
    assert table.autoFilter.ref == table.ref  # the header's filter buttons
    assert [column.name for column in table.tableColumns] == list(COLUMNS)
    assert sheet.freeze_panes == "A2"


def test_trace_goes_on_to_further_sheets_at_the_row_limit(tmp_path: Path):
    whole, split = tmp_path / "whole.xlsx", tmp_path / "split.xlsx"
    write_run(whole, "--steps", "4")
    write_run(split, "--steps", "4", rows_per_sheet=50)
    book = load_workbook(split)
    titles = [title for title in book.sheetnames if title.startswith("Trace")]
    rows = trace_rows(whole)
    assert titles == ["Trace"] + [f"Trace {k}" for k in range(2, len(titles) + 1)]
    assert len(titles) == -(-len(rows) // 49)
    assert all(book[title].max_row <= 50 for title in titles)
    assert trace_rows(split) == rows
    names = [table.displayName for title in titles for table in book[title].tables.values()]
    assert len(set(names)) == len(titles)
    readme = [str(value) for row in book["Read me"].iter_rows(values_only=True) for value in row]
    assert any("continues on Trace, Trace 2" in text for text in readme)


def test_summary_has_loss_gradient_norm_and_step_size_charts(small):
    path, report, traces = small
    with zipfile.ZipFile(path) as archive:
        charts = sorted(name for name in archive.namelist() if name.startswith("xl/charts/chart"))
        assert len(charts) == 3
        xml = [archive.read(name).decode() for name in charts]
    assert all("scatterChart" in text for text in xml)
    assert "'Chart data'!$B$2:$B$7" in xml[0] and "'Chart data'!$C$2:$C$7" in xml[0]  # hand and torch L
    assert "'Chart data'!$D$2:$D$7" in xml[1] and "'Chart data'!$E$2:$E$7" in xml[1]  # dense1, dense2
    assert "'Chart data'!$F$2:$F$7" in xml[2] and "'Chart data'!$G$2:$G$7" in xml[2]  # η, ‖Δθ‖/‖g‖
    assert '<logBase val="10"' in xml[2]
    data = list(load_workbook(path)["Chart data"].iter_rows(min_row=2, values_only=True))
    assert [row[0] for row in data] == [1, 2, 3, 4, 5, 6]
    assert [row[1:3] for row in data] == [tuple(pair) for pair in report.loss_history]
    # plain SGD: θ′ − θ = −η·g, so the effective step ‖θ′ − θ‖/‖g‖ is η itself
    for row, (hand, _) in zip(data, traces, strict=True):
        assert row[5] == float(hand.value("sgd.lr")) == 2.0  # xor's default η
        assert row[6] == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            ("--lr", "0.5", "--schedule", "step", "--step-size", "2", "--gamma", "0.5"),
            [0.5, 0.5, 0.25, 0.25, 0.125],
        ),
        (("--optimizer", "adam", "--lr", "0.1"), None),
        (("--clip-norm", "0.01"), None),
    ],
)
def test_step_size_chart_follows_the_lr_in_force_and_the_update(tmp_path: Path, options, expected):
    """The η column is the lr term of each step; the effective step is ‖θ′ − θ‖/‖g‖ from the
    hand side's weights (η under plain SGD; smaller under clipping; anything under Adam)."""
    path = tmp_path / "run.xlsx"
    _, traces = write_run(path, "--steps", "5", *options)
    data = list(load_workbook(path)["Chart data"].iter_rows(min_row=2, values_only=True))
    kind = "adam" if "adam" in options else "sgd"
    etas = [float(hand.value(f"{kind}.lr")) for hand, _ in traces]
    assert [row[5] for row in data] == etas
    if expected is not None:
        assert etas == expected
    before = xor(*options).initial_params
    for row, (hand, _) in zip(data, traces, strict=True):
        after = {name: hand.value(f"{name}_next") for name in before}
        moved = np.sqrt(sum(np.sum((after[name] - before[name]) ** 2) for name in before))
        gradient = np.sqrt(
            sum(np.sum(hand.value(f"{n.rsplit('.', 1)[0]}.dL_d{n.rsplit('.', 1)[1]}") ** 2) for n in before)
        )
        assert row[6] == pytest.approx(moved / gradient, rel=1e-12)
        if "--clip-norm" in options:
            assert row[6] < row[5]  # clipping shortens the step below η
        before = after


def test_summary_flags_each_term_against_its_tolerance(small):
    path, report, _ = small
    sheet = load_workbook(path)["Summary"]
    rows = {row[0]: row for row in sheet.iter_rows(values_only=True) if row[0] in report.terms}
    assert set(rows) == set(report.terms)
    for name, stats in report.terms.items():
        row = rows[name]
        assert (row[3], row[4], row[5]) == (stats.max_abs, stats.elem_rel, stats.norm_rel)
        assert row[6] == report.tolerance.rtol and row[7] == "ok"
    (rule_range,) = [str(rng.sqref) for rng in sheet.conditional_formatting]
    assert rule_range.startswith("E") and ":F" in rule_range  # both figures, against rtol in G


def test_checks_fold_runs_down_a_column():
    checks = {(10, 3): (1, "a.z", 0), (11, 3): (2, "a.z", 0), (12, 3): (3, "a.z", 0), (13, 3): (5, "a.z", 0)}
    checks[(10, 4)] = (1, "a.z", 1)
    checks.update({(20 + k, 5): (4, "a.W", 1 + 3 * k) for k in range(4)})  # a column of a 4×3 W
    checks[(24, 5)] = (4, "a.W", 2)  # the stride breaks: a run of its own
    assert check_runs(checks) == [
        (3, 10, 12, 1, "a.z", 0, 1, 0),
        (3, 13, 13, 5, "a.z", 0, 0, 0),
        (4, 10, 10, 1, "a.z", 1, 0, 0),
        (5, 20, 23, 4, "a.W", 1, 0, 3),
        (5, 24, 24, 4, "a.W", 2, 0, 0),
    ]


# --- determinism and atomic writes ------------------------------------------------------------


def test_identical_input_gives_identical_bytes_whatever_the_hash_seed(tmp_path: Path):
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed{seed}.xlsx"
        command = [sys.executable, "-m", "handgrad", "compare", "xor", "--steps", "12", "--quiet"]
        command += ["--walkthrough", "1,7", "--xlsx", str(out)]
        done = subprocess.run(command, env={**ENV, "PYTHONHASHSEED": seed}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    with zipfile.ZipFile(tmp_path / "seed1.xlsx") as archive:
        assert {info.date_time for info in archive.infolist()} == {ZIP_TIME}
        assert archive.namelist()[0] == "[Content_Types].xml"
        core = archive.read("docProps/core.xml").decode()
    assert core.count(DOCUMENT_TIME.strftime("%Y-%m-%dT%H:%M:%SZ")) == 2  # created and modified


KILL_DRIVER = textwrap.dedent(
    """
    import sys
    from handgrad import harness
    from handgrad.cli import scenario_parser
    from handgrad.scenarios import SCENARIOS
    from handgrad.workbook.writer import WorkbookWriter

    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", sys.argv[2]]))
    writer = WorkbookWriter(experiment)
    report = harness.run(experiment, observers=[writer.observe])
    print("WRITING", flush=True)
    writer.write(sys.argv[1], report)
    print("DONE", flush=True)
    """
)


def test_killing_the_writer_leaves_the_old_file_or_a_complete_new_one(tmp_path: Path):
    target = tmp_path / "run.xlsx"
    write_run(target, "--steps", "2")
    old = target.read_bytes()
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DRIVER)
    steps = 1500
    outcomes = []
    for delay in (None, 0.0, 0.05, 0.2, 0.5, 1.0, 2.0):  # None: during the run; else after WRITING
        target.write_bytes(old)
        process = subprocess.Popen(
            [sys.executable, str(driver), str(target), str(steps)], env=ENV, stdout=subprocess.PIPE, text=True
        )
        if delay is None:
            time.sleep(3.0)
        else:
            assert process.stdout.readline().strip() == "WRITING"
            time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        data = target.read_bytes()
        if data == old:
            outcomes.append("old")
            continue
        with zipfile.ZipFile(target) as archive:  # a new file must be whole and valid
            assert archive.testzip() is None
        book = load_workbook(target, read_only=True)
        last = None
        for row in book["Trace"].iter_rows(min_row=2, values_only=True):
            last = row
        book.close()
        assert last[0] == steps
        outcomes.append("new")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("run.xlsx") and p.name != "run.xlsx"]
    assert "old" in outcomes  # the kills did land before the rename


# --- Excel's rules ------------------------------------------------------------------------------


def test_user_text_starting_with_equals_is_written_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "=1+1.csv"
    data.write_text("=1+1,=SUM(A1:A2),y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n")
    status = cli.main(
        ["compare", "xor", "--steps", "3", "--quiet", "--data", "=1+1.csv", "--xlsx", "out.xlsx"]
    )
    assert status == 0
    book = load_workbook(tmp_path / "out.xlsx")
    found = [
        cell
        for sheet in book.worksheets
        for row in sheet.iter_rows()
        for cell in row
        if isinstance(cell.value, str) and "1+1" in cell.value
    ]
    assert found and all(cell.data_type == "s" for cell in found)
    assert any(cell.value == "=1+1.csv" for cell in found)


def test_grid_text_never_becomes_a_formula_but_builder_formulas_do(tmp_path: Path):
    book = Book("Sheet")
    grid = Grid("Sheet")
    grid.text(1, 1, '=HYPERLINK("http://example.com")')
    grid.set(1, 2, "=1+1")
    grid.set(2, 1, ArrayFormula("A2:B2", "=TRANSPOSE(A3:A4)"))
    grid.set(3, 1, 1.5)
    grid.set(4, 1, 2.5)
    grid.text(5, 1, "  padded <&> \x01 text  ")
    write_grid(book, grid, book.first)
    save(book.workbook, tmp_path / "t.xlsx", book.sheet_data, book.strings)
    sheet = load_workbook(tmp_path / "t.xlsx")["Sheet"]
    assert (sheet["A1"].data_type, sheet["A1"].value) == ("s", '=HYPERLINK("http://example.com")')
    assert (sheet["B1"].data_type, sheet["B1"].value) == ("f", "=1+1")
    assert isinstance(sheet["A2"].value, ArrayFormula) and sheet["A2"].value.ref == "A2:B2"
    assert sheet["A5"].value == "  padded <&> \ufffd text  "


@pytest.mark.parametrize(
    "title",
    ["", "a" * 32, "a/b", "a[1]", "x:y", "what?", "star*"],
)
def test_sheet_titles_excel_refuses_are_refused(title: str):
    with pytest.raises(ExcelLimitError):
        check_title(title)


@pytest.mark.parametrize("name", ["W1", "XFD1048576", "R1C1", "R", "c"])
def test_defined_names_that_read_as_addresses_are_refused(name: str):
    book = Book("Sheet")
    grid = Grid("Other")
    grid.name(name, 1, 1)
    with pytest.raises(ExcelLimitError, match="cell address"):
        write_grid(book, grid)


def test_formula_longer_than_excel_allows_is_refused():
    with pytest.raises(ExcelLimitError, match="8,192"):
        SheetData().add_cells(1, {1: ("=" + "+".join(["A1"] * 3000), 0, False)})


@pytest.mark.parametrize("where", [(1_048_577, 1), (1, 16_385)])
def test_cells_past_excel_limits_are_refused(where: tuple[int, int]):
    book = Book("Sheet")
    grid = Grid("Big")
    grid.set(*where, 1.0)
    with pytest.raises(ExcelLimitError):
        write_grid(book, grid)


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, field",
    [
        (["--walkthrough", "0"], "walkthrough"),
        (["--walkthrough", "1,x"], "walkthrough"),
        (["--walkthrough", "99"], "walkthrough"),
        (["--live-steps", "0"], "live_steps"),
    ],
)
def test_bad_workbook_options_are_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], field: str
):
    target = tmp_path / "x.xlsx"
    status = cli.main(["compare", "xor", "--steps", "5", "--quiet", "--xlsx", str(target), *options])
    assert status == cli.EXIT_BAD_INPUT
    assert field in capsys.readouterr().err
    assert not target.exists()


def test_xlsx_into_a_missing_folder_is_refused_up_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    status = cli.main(["compare", "xor", "--steps", "100000", "--xlsx", str(tmp_path / "no" / "x.xlsx")])
    assert status == cli.EXIT_BAD_INPUT
    assert "--xlsx" in capsys.readouterr().err


def test_a_run_stopped_by_non_finite_values_still_writes_its_workbook(tmp_path: Path):
    target = tmp_path / "nan.xlsx"
    options = [
        "--steps",
        "30",
        "--lr",
        "1e300",
        "--activation",
        "identity",
        "--output-activation",
        "identity",
    ]
    status = cli.main(["compare", "xor", *options, "--quiet", "--xlsx", str(target)])
    assert status == cli.EXIT_MISMATCH
    book = load_workbook(target)
    summary_text = [value for row in book["Summary"].iter_rows(values_only=True) for value in row if value]
    assert any(
        isinstance(value, str) and value.startswith("Stopped early: non-finite") for value in summary_text
    )
    steps = {row[0] for row in book["Trace"].iter_rows(min_row=2, values_only=True)}
    assert steps == {1, 2}
    assert "nan" in {row[5] for row in book["Trace"].iter_rows(min_row=2, values_only=True)}


def test_compare_script_runs_the_cli(tmp_path: Path):
    target = tmp_path / "s.xlsx"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compare.py"), "xor", "--steps", "2", "--xlsx", str(target)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "xor: all" in done.stdout and target.is_file()


# --- the committed examples ---------------------------------------------------------------------


def test_committed_examples_are_what_the_code_generates():
    build = _script("build_spreadsheets")
    assert build.check() == []


def test_a_changed_workbook_is_reported_stale(tmp_path: Path):
    build = _script("build_spreadsheets")
    fresh = tmp_path / "a.xlsx"
    write_run(fresh, "--steps", "2")
    other = tmp_path / "b.xlsx"
    write_run(other, "--steps", "2", "--lr", "0.25")
    assert build.differences(fresh, fresh) == []
    assert build.differences(other, fresh) != []
    assert build.differences(tmp_path / "missing.xlsx", fresh) != []


# --- memory ---------------------------------------------------------------------------------------

MEMORY_DRIVER = textwrap.dedent(
    """
    import resource, sys, time
    from handgrad import harness
    from handgrad.cli import scenario_parser
    from handgrad.scenarios import SCENARIOS
    from handgrad.tracebudget import TraceSteps
    from handgrad.workbook.writer import WorkbookWriter

    steps = int(sys.argv[2])
    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", str(steps)]))
    hand, torch = experiment.hand.step(1), experiment.twin.step(1)
    loss = float(hand.value("loss.L"))
    writer = WorkbookWriter(experiment, trace_steps=TraceSteps("all"))  # every row: the memory test
    start = time.perf_counter()
    cpu = time.process_time()
    for step in range(1, steps + 1):  # the same traces every step: the writer's cost alone
        hand.step = torch.step = step
        writer.observe(step, hand, torch, [])
    streamed = time.process_time() - cpu  # CPU seconds: wall clock depends on the machine's load
    config = dict(experiment.config)
    report = harness.Report("xor", config, "float64", writer.tolerance, steps, steps_run=steps)
    report.loss_history = [(loss, loss)] * steps
    report.final_params = {"hand": experiment.hand.params(), "torch": experiment.twin.params()}
    writer.write(sys.argv[1], report)
    writer.close()
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{writer.trace.rows} {streamed:.3f} {total:.3f} {peak:.1f}")
    """
)


def _memory_run(tmp_path: Path, steps: int) -> tuple[int, float, float, float]:
    driver = tmp_path / "memory.py"
    driver.write_text(MEMORY_DRIVER)
    out = tmp_path / f"m{steps}.xlsx"
    done = subprocess.run(
        [sys.executable, str(driver), str(out), str(steps)], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    rows, streamed, total, peak = done.stdout.split()
    return int(rows), float(streamed), float(total), float(peak)


def test_trace_streams_in_flat_memory(tmp_path: Path):
    short = _memory_run(tmp_path, 1_000)
    long = _memory_run(tmp_path, 20_000)
    assert long[0] == 20 * short[0]
    print(
        f"\ntrace rows per CPU second (streaming): {short[0] / short[1]:,.0f} at 1k steps, "
        f"{long[0] / long[1]:,.0f} at 20k; "
        f"peak RSS {short[3]:.0f} MB at 1k steps, {long[3]:.0f} MB at 20k"
    )
    assert long[3] - short[3] < 50


# --- Parameters: the torch key of every parameter of every family ---------------------------------


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_parameters_sheet_names_a_real_torch_key_for_every_parameter(name: str):
    from handgrad.workbook.parameters import parameters_grid

    experiment = SCENARIOS[name].build(scenario_parser(name).parse_args(["--steps", "1"]))
    module = next(v for v in vars(experiment.twin).values() if isinstance(v, __import__("torch").nn.Module))
    state_dict = set(module.state_dict())
    report = harness.run(experiment)
    grid = parameters_grid(experiment, report)
    header = next(row for (row, col), cell in grid.cells.items() if cell.value == "torch state_dict key")
    rows = {}
    for row in range(header + 1, header + 1 + len(experiment.initial_params)):
        rows[grid.cells[(row, 1)].value] = grid.cells[(row, 4)].value
    assert list(rows) == list(experiment.initial_params)
    for param, text in rows.items():
        keys = [word for word in re.findall(r"[\w.]+", text) if word in state_dict]
        assert keys, f"{name}: {param} maps onto {text!r}, not a key of {sorted(state_dict)}"
        shapes = {key: tuple(module.state_dict()[key].shape) for key in keys}
        size = sum(int(np.prod(shape)) for shape in shapes.values())
        assert size == np.size(experiment.initial_params[param]), (param, shapes)
