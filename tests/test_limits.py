"""Excel's limits as a user meets them through the command line: the Trace split at the row limit,
the live Training sheet's cap stated in the sheet, a formula past 8,192 characters refused when it is
generated, and user text starting with =, +, - or @ written as text, never as a formula.

(The unit checks of the same rules on Grid, SheetData and titles are in test_workbook.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from openpyxl import load_workbook

from handgrad import cli
from handgrad.cli import scenario_parser
from handgrad.contract.spec import SpecError
from handgrad.scenarios import SCENARIOS
from handgrad.workbook import formulas
from handgrad.workbook.writer import run_with_workbook


def texts(path: Path, title: str) -> list[str]:
    book = load_workbook(path, read_only=True)
    found = [v for row in book[title].iter_rows(values_only=True) for v in row if isinstance(v, str)]
    book.close()
    return found


def test_a_diverging_run_splits_its_trace_at_the_row_limit_and_says_so(tmp_path: Path):
    options = ["--steps", "200", "--lr", "1e4", "--activation", "relu", "--output-activation", "identity"]
    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(options))
    path = tmp_path / "split.xlsx"
    report = run_with_workbook(experiment, path, rows_per_sheet=1000)  # Excel's 1,048,576, scaled down
    assert report.stopped
    book = load_workbook(path, read_only=True)
    titles = [title for title in book.sheetnames if title.startswith("Trace")]
    sizes = [sum(1 for _ in book[title].iter_rows()) for title in titles]
    steps = {row[0] for title in titles for row in book[title].iter_rows(min_row=2, values_only=True)}
    book.close()
    assert len(titles) > 1 and titles[1] == "Trace 2"
    assert all(size <= 1000 for size in sizes) and sizes[0] == 1000
    assert steps == set(range(1, report.steps_run + 1))  # every step up to the stop, none lost at a seam
    assert any("continues on Trace, Trace 2" in text for text in texts(path, "Read me"))


def test_the_training_sheet_says_where_its_live_rows_stop(tmp_path: Path):
    path = tmp_path / "capped.xlsx"
    argv = ["compare", "xor", "--steps", "6", "--live-steps", "4", "--quiet", "--xlsx", str(path)]
    assert cli.main(argv) == cli.EXIT_OK
    notes = " ".join(texts(path, "Training"))
    assert "steps 1 to 4 of 6" in notes and "live_steps = 4" in notes


def test_a_formula_longer_than_excel_allows_is_refused_when_generated():
    assert len(formulas.formula("A1+" * 2729 + "A123")) == 8192  # exactly the limit: allowed
    with pytest.raises(SpecError) as refused:
        formulas.formula("A1+" * 2730 + "A1")
    assert refused.value.field == "workbook" and "8,192" in str(refused.value)


def test_a_formula_too_long_for_excel_is_refused_when_generated_and_the_sheet_says_so(tmp_path: Path):
    """A 1000-unit layer makes the live Training row's z⁽²⁾ a 16,008-character formula: it is never
    written; the Training sheet says why, and every term stays on the Trace sheet."""
    path = tmp_path / "wide.xlsx"
    argv = ["compare", "mlp", "--sizes", "2,1000,1", "--steps", "1", "--quiet", "--xlsx", str(path)]
    assert cli.main(argv) == cli.EXIT_OK
    book = load_workbook(path, read_only=True)
    texts = [
        str(value)
        for row in book["Training"].iter_rows(max_row=5, values_only=True)
        for value in row
        if value
    ]
    book.close()
    assert any("8,192" in text and "would be" in text for text in texts), texts


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@"])
def test_user_text_starting_like_a_formula_is_written_as_text(
    prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    source = f"{prefix}SUM(A1:A2)+1.csv"  # the data file's name is shown in Summary and Read me
    names = [source]
    (tmp_path / source).write_text(f"{prefix}a,{prefix}1+1,{prefix}y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n")
    argv = ["compare", "xor", "--steps", "2", "--quiet", f"--data={source}", "--xlsx", "out.xlsx"]
    assert cli.main(argv) == cli.EXIT_OK
    book = load_workbook(tmp_path / "out.xlsx")
    cells = [
        cell
        for sheet in book.worksheets
        for row in sheet.iter_rows()
        for cell in row
        if isinstance(cell.value, str) and any(name in cell.value for name in names)
    ]
    assert {name for name in names if any(name in cell.value for cell in cells)} == set(names)
    assert all(cell.data_type == "s" for cell in cells), [(c.coordinate, c.data_type) for c in cells]
