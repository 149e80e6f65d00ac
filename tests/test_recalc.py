"""Every live formula, recomputed by a real spreadsheet engine (headless LibreOffice), equals the
hand side's number; and recalc.py notices when one does not."""

from __future__ import annotations

import importlib.util
import re
import sys
import time
import zipfile
from pathlib import Path

import pytest
from openpyxl.utils.cell import column_index_from_string

from handgrad import cli
from handgrad.workbook.xlsx import column_letter

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "spreadsheets").glob("*.xlsx"))

pytestmark = pytest.mark.libreoffice


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"handgrad_scripts_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


recalc = _script("recalc")


def _workbook(path: Path, *options: str) -> Path:
    assert cli.main(["compare", "xor", "--quiet", *options, "--xlsx", str(path)]) == cli.EXIT_OK
    return path


def test_every_committed_example_recomputes_to_the_hand_values(libreoffice: str):
    assert [path.name for path in EXAMPLES] == sorted(_script("build_spreadsheets").EXAMPLES)
    assert len(EXAMPLES) == 8  # incl. Adam, momentum SGD, RMSprop with a cosine schedule and clipping
    results, _ = recalc.recalc_and_check(EXAMPLES)
    for result in results:
        assert result.ok, f"{result.workbook.name}:\n" + "\n".join(result.problems[:20])
        assert result.checked > 10_000  # Walkthrough and every live Training row
        assert result.largest_abs <= 1e-12


def _tamper(source: Path, target: Path, edit) -> str:
    """Copy ``source`` with the formula of its first checked Training cell edited; return where."""
    with recalc.XlsxReader(source) as reader:
        sheet, col, row = next(
            (s, c, first) for s, c, first, *_ in recalc.read_checks(reader) if s == "Training"
        )
        part = reader.sheets[sheet]
    ref = f"{column_letter(col)}{row}"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for name in old.namelist():
            data = old.read(name)
            if name == part:
                data = _edit_formula(data.decode(), row, col, edit).encode()
            new.writestr(name, data)
    return f"{sheet}!{ref}"


def _edit_formula(xml: str, row: int, col: int, edit) -> str:
    """``xml`` with the formula of the cell at (row, col) edited. A cell names its column in ``r``
    only after a gap; otherwise it is the column after the cell before it."""
    line = re.search(rf'<row r="{row}"[^>]*>(.*?)</row>', xml)
    assert line is not None
    at = 0
    for cell in re.finditer(r"<c(?:\s[^>]*?)?(?:/>|>.*?</c>)", line.group(1)):
        named = re.match(r'<c\s[^>]*?\br="([A-Z]+)\d+"', cell.group(0))
        at = column_index_from_string(named.group(1)) if named else at + 1
        if at == col:
            text = cell.group(0)
            formula = re.search(r"<f>([^<]*)</f>", text)
            assert formula is not None
            edited = text[: formula.start(1)] + edit(formula.group(1)) + text[formula.end(1) :]
            start = line.start(1) + cell.start()
            return xml[:start] + edited + xml[line.start(1) + cell.end() :]
    raise AssertionError(f"no cell at row {row}, column {col}")


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda body: f"({body})*(1+1E-9)", "recomputed"),  # off in the 9th digit
        (lambda body: "1/0", "error #DIV/0!"),
    ],
)
def test_recalc_fails_on_a_formula_that_does_not_give_the_hand_value(
    libreoffice: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, expected: str
):
    good = _workbook(tmp_path / "good.xlsx", "--steps", "3")
    bad = tmp_path / "bad.xlsx"
    where = _tamper(good, bad, edit)
    assert recalc.main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and where in out and expected in out


def test_recalc_reports_a_workbook_libreoffice_cannot_convert(libreoffice: str, tmp_path: Path):
    junk = tmp_path / "junk.xlsx"
    junk.write_bytes(b"this is not a zip file")
    assert recalc.main([str(junk)]) == 2


@pytest.mark.slow
def test_default_xor_workbook_is_small_and_recomputes(libreoffice: str, tmp_path: Path):
    """The default run (1000 steps): under 8 MB, and every formula right after LibreOffice's
    recomputation. Prints the size and LibreOffice's time (measured, not asserted)."""
    path = tmp_path / "xor.xlsx"
    start = time.perf_counter()
    _workbook(path)
    written = time.perf_counter() - start
    size = path.stat().st_size
    assert size < 8 * 1024 * 1024
    results, seconds = recalc.recalc_and_check([path])
    assert results[0].ok, "\n".join(results[0].problems[:20])
    print(
        f"\ndefault xor workbook: {size / 1e6:.2f} MB, run+write {written:.1f} s, LibreOffice {seconds:.1f} s"
    )
