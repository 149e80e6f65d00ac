"""Cells written without their ``r`` reference read back in their columns, in every reader.

handgrad leaves ``r="F3"`` out of a ``<c>`` wherever the cell is the next column after the cell
written before it in its row (SpreadsheetML makes ``r`` optional); every cell after a gap keeps it.
A workbook full of gaps — a row starting past column A, an empty cell that writes nothing, a
scalar Trace term with no index cell, a Trace row whose rel is empty — must read back the same by
openpyxl (normal and read-only), by scripts/recalc.py's reader (cells and rows), and by
LibreOffice.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from openpyxl import load_workbook
from openpyxl.worksheet.formula import ArrayFormula

from handgrad.contract.tolerance import TOLERANCES
from handgrad.contract.trace import StepTrace
from handgrad.workbook.grid import Grid
from handgrad.workbook.tracesheet import TraceSheets
from handgrad.workbook.writer import Book, write_grid
from handgrad.workbook.xlsx import column_letter

ROOT = Path(__file__).resolve().parent.parent


def _recalc():
    spec = importlib.util.spec_from_file_location("handgrad_scripts_recalc", ROOT / "scripts" / "recalc.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


recalc = _recalc()

# (row, col) -> what a reader must see: a number, a text, a bool or a formula's text ("=...")
EXPECTED: dict[tuple[int, int], object] = {
    (1, 1): 1.5, (1, 2): "b", (1, 4): 4.0, (1, 5): "=A1+D1",  # C1 missing: D1 after a gap
    (2, 3): 0.1 + 0.2, (2, 4): -2.5e-300,  # the row starts at C
    (3, 2): "=B2*2", (3, 3): True, (3, 30): 7.0, (3, 31): "<&> text",  # AD3 after a long gap
    (4, 1): "nan", (4, 2): 5.0, (4, 3): "=-A1",  # a non-finite number is written as text
    (6, 702): 1.0, (6, 703): 2.0,  # ZZ6, AAA6
}  # fmt: skip


def _grid() -> Grid:
    grid = Grid("Cells")
    for (row, col), value in EXPECTED.items():
        value = float("nan") if value == "nan" else value
        if isinstance(value, str) and not value.startswith("="):
            grid.text(row, col, value)
        else:
            grid.set(row, col, value, "input" if col == 4 else None)
    grid.set(3, 1, None)  # an empty cell without style: no element at all, so B3 must name B
    grid.set(5, 1, ArrayFormula("A5:B5", "=TRANSPOSE(B1:B2)"))
    return grid


def _trace(step: int) -> tuple[StepTrace, StepTrace]:
    """Step 1: torch's b all 0, so rel is empty there (J after a gap; the per-cell path); step 2:
    every number finite (the one-template-per-row path)."""
    hand, torch = StepTrace(step), StepTrace(step)
    hand.add("dense1.W", "W", "state", np.array([[0.25, -1.0], [3.0, 1e-9]]))
    torch.add("dense1.W", "W", "state", np.array([[0.25, -1.0], [3.0, 2e-9]]))
    hand.add("loss.L", "L", "loss", np.array(0.125))  # a scalar: no index cell, F after a gap
    torch.add("loss.L", "L", "loss", np.array(0.125))
    hand.add("dense1.b", "b", "state", np.array([1e-30, 0.5]))
    torch.add("dense1.b", "b", "state", np.array([0.0, 0.0]) if step == 1 else np.array([1e-30, 0.5]))
    return hand, torch


def _write(path: Path) -> tuple[Path, list[tuple]]:
    book = Book("Cells")
    write_grid(book, _grid(), book.first)
    trace = TraceSheets(
        book.workbook, TOLERANCES["float64"], strings=book.strings, new_sheet=book.create_sheet
    )
    rows = []
    for step in (1, 2):
        hand, torch = _trace(step)
        trace.add_step(step, hand, torch)
        for term in hand:
            layer, _, short = term.name.partition(".")
            labels = [""] if term.value.ndim == 0 else [_label(i) for i in np.ndindex(term.value.shape)]
            h, t = term.value.reshape(-1), torch[term.name].value.reshape(-1)
            for k, label in enumerate(labels):
                rows.append((step, term.phase, layer, short, label or None, float(h[k]), float(t[k])))
    for sheet, data in trace.finish():
        book.sheet_data[sheet] = data
    book.save(path)
    book.close()
    return path, rows


def _label(index: tuple[int, ...]) -> str:
    return "[" + ",".join(str(i + 1) for i in index) + "]"


def _plain(value: object) -> object:
    if isinstance(value, ArrayFormula):
        return ("array", value.ref, value.text)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _expected_cells() -> dict[tuple[int, int], object]:
    return {**EXPECTED, (5, 1): ("array", "A5:B5", "=TRANSPOSE(B1:B2)")}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple]]:
    return _write(tmp_path_factory.mktemp("refs") / "refs.xlsx")


def test_references_are_left_out_only_where_a_cell_follows_the_one_before(written):
    path, _ = written
    with zipfile.ZipFile(path) as archive:
        cells = archive.read("xl/worksheets/sheet1.xml").decode()
    named = re.findall(r'<c r="([A-Z]+\d+)"', cells)
    assert named == ["D1", "C2", "B3", "AD3", "ZZ6"]  # after a gap; A1, B1, E1, C3... follow their neighbour
    assert len(re.findall(r"<c[ >/]", cells)) == len(EXPECTED) + 1  # every cell written, A5 too


@pytest.mark.parametrize("read_only", [False, True])
def test_openpyxl_reads_every_cell_in_its_column(written, read_only: bool):
    path, rows = written
    book = load_workbook(path, read_only=read_only)
    found = {
        (cell.row, cell.column): _plain(cell.value)
        for row in book["Cells"].iter_rows()
        for cell in row
        if cell.value is not None
    }
    assert found == _expected_cells()
    trace = [row[:7] for row in book["Trace"].iter_rows(min_row=2, values_only=True)]
    assert trace == rows
    b = list(book["Trace"].iter_rows(values_only=True))[6:8]  # step 1's b: torch 0, rel empty
    assert [row[8] for row in b] == [None, None] and [row[9] for row in b] == ["FAIL", "FAIL"]
    book.close()


def test_recalc_reader_reads_every_cell_in_its_column(written):
    path, rows = written
    with recalc.XlsxReader(path) as reader:
        found = {}
        for row, col, cell in reader.cells("Cells"):
            if cell.array_ref is not None:
                found[(row, col)] = ("array", cell.array_ref, "=" + cell.formula)
            elif cell.formula is not None:
                found[(row, col)] = "=" + cell.formula
            elif cell.value is not None:
                found[(row, col)] = cell.value
        trace = [tuple(values[:7]) for _, values in reader.rows("Trace", 10)][1:]
        numbers = [row for _, row in reader.rows("Cells", 703)]
    assert found == _expected_cells()
    assert trace == rows
    assert numbers[0][:5] == [1.5, "b", None, 4.0, None] and numbers[-1][701:] == [1.0, 2.0]


@pytest.mark.libreoffice
def test_libreoffice_reads_every_cell_in_its_column(written, tmp_path: Path, libreoffice: str):
    path, rows = written
    converted, _ = recalc.recalculate([path], tmp_path / "out", soffice=libreoffice)
    with recalc.XlsxReader(converted[path.resolve()]) as reader:
        found = {(row, col): cell for row, col, cell in reader.cells("Cells")}
        trace = [tuple(values[:7]) for _, values in reader.rows("Trace", 10)][1:]
    for (row, col), want in EXPECTED.items():
        cell = found[(row, col)]
        where = column_letter(col) + str(row)
        if isinstance(want, str) and want.startswith("="):
            assert "=" + str(cell.formula) == want, where
        elif isinstance(want, float):  # LibreOffice writes 15 significant digits
            assert cell.value == float(f"{want:.15g}"), where
        else:
            assert cell.value == want, where
    assert found[(1, 5)].value == 5.5
    assert found[(3, 2)].value == 0.0  # B2 is empty: =B2*2 is 0
    assert found[(4, 3)].value == -1.5
    assert trace == rows
