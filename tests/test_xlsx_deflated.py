"""The workbook's fast paths write what the plain paths write.

Sheets are deflated as their rows come (workbook/deflated.py) and spliced raw into the zip; a
row's cells are serialised without a call per cell (xlsx.grid_row); the |Δ| cells' cached values
come from the blocks that laid them out (grid.differences). Each is checked here against the
plain path it replaces: zipfile compressing the entry itself, cell_xml per cell, the |Δ| formula
read back.
"""

from __future__ import annotations

import io
import math
import os
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
from openpyxl import load_workbook
from openpyxl.worksheet.formula import ArrayFormula

from handgrad.workbook import deflated, forked_rows
from handgrad.workbook.cached import fill_cached
from handgrad.workbook.grid import Grid
from handgrad.workbook.package import save, zip_info
from handgrad.workbook.writer import Book, write_grid
from handgrad.workbook.xlsx import (
    SharedStrings,
    SheetData,
    cell_xml,
    column_letter,
    row_cells,
)


def _content(size: int, seed: int = 0) -> bytes:
    """Sheet-like XML: repetitive, with numbers that do not repeat."""
    rng = random.Random(seed)
    parts, total = [], 0
    while total < size:
        part = f'<row r="{total}"><c s="3"><f>ABS(B{total}-Z{total})</f><v>{rng.random()!r}</v></c></row>'
        parts.append(part)
        total += len(part)
    return "".join(parts).encode()[:size]


def _plain_zip(content: bytes, name: str = "xl/worksheets/sheet1.xml") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", allowZip64=True) as target:
        target.writestr(zip_info("first.xml", 3), b"abc")
        with target.open(zip_info(name, len(content)), "w") as entry:
            entry.write(content)
        target.writestr(zip_info("last.xml", 3), b"xyz")
    return out.getvalue()


def _deflated_zip(content: bytes, pieces: list[int], name: str = "xl/worksheets/sheet1.xml") -> bytes:
    stream = deflated.DeflatedStream(content[: pieces[0]])
    try:
        start = pieces[0]
        for end in [*pieces[1:], len(content)]:
            stream.add(content[start:end])
            start = end
        stream.finish()
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", allowZip64=True) as target:
            target.writestr(zip_info("first.xml", 3), b"abc")
            deflated.write_entry(target, zip_info(name, stream.size), stream)
            target.writestr(zip_info("last.xml", 3), b"xyz")
        return out.getvalue()
    finally:
        stream.close()


@pytest.mark.parametrize("size", [0, 1, 700, 300_000, 3_500_000])
def test_a_deflated_entry_has_the_bytes_zipfile_writes(size: int):
    content = _content(size)
    rng = random.Random(size)
    cuts = sorted({rng.randrange(size + 1) for _ in range(20)} | {min(size, 1500)})
    expected = _plain_zip(content)
    assert _deflated_zip(content, cuts) == expected
    assert zipfile.ZipFile(io.BytesIO(expected)).read("xl/worksheets/sheet1.xml") == content


def test_a_deflated_zip64_entry_has_the_bytes_zipfile_writes(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 50_000)  # a 4 GiB sheet, scaled down
    content = _content(200_000)
    expected = _plain_zip(content)
    assert b"\x01\x00\x10\x00" in expected  # the zip64 extra field (id 1, 16 bytes) is there
    assert _deflated_zip(content, [100, 70_000]) == expected
    assert zipfile.ZipFile(io.BytesIO(expected)).read("xl/worksheets/sheet1.xml") == content


def test_without_zipfile_internals_the_stream_is_written_the_plain_way(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(deflated, "_WRITER_FIELDS", ("_a_field_no_zipfile_has",))
    content = _content(300_000)
    assert _deflated_zip(content, [1000, 5000]) == _plain_zip(content)


def _book(tmp_path: Path, name: str, width_after_rows: bool, sheet_known: bool) -> bytes:
    """A sheet of 2,000 rows; its column width set before the rows or after they were deflated."""
    book = Book("Sheet")
    sheet = book.first
    data = SheetData(sheet if sheet_known else None)
    data.FLUSH = 2_000  # flush (and guess the frame) early
    if not width_after_rows:
        sheet.column_dimensions["A"].width = 31
    for row in range(1, 2001):
        data.add_cells(row, {1: (row * 0.1, 0, False), 2: (f"=A{row}*2", 0, False, row * 0.2)})
    if width_after_rows:
        sheet.column_dimensions["A"].width = 31
    book.sheet_data[sheet] = data
    path = tmp_path / name
    save(book.workbook, path, book.sheet_data, book.strings)
    book.close()
    return path.read_bytes()


def test_a_frame_changed_after_the_rows_began_is_written_as_it_ends(tmp_path: Path):
    plain = _book(tmp_path, "plain.xlsx", width_after_rows=False, sheet_known=False)
    assert _book(tmp_path, "early.xlsx", width_after_rows=False, sheet_known=True) == plain
    assert _book(tmp_path, "late.xlsx", width_after_rows=True, sheet_known=True) == plain
    sheet = load_workbook(tmp_path / "late.xlsx")["Sheet"]
    assert sheet.column_dimensions["A"].width == 31
    assert (sheet["A2000"].value, sheet["B2000"].value) == (200.0, "=A2000*2")


CELLS = [  # (value, style, is_text, cached): every kind a grid cell can hold
    (1.5, 0, False, None),
    (-0.0, 3, False, None),
    (math.inf, 0, False, None),
    (math.nan, 2, False, None),
    (np.float64(2.5), 0, False, None),
    (7, 4, False, None),
    (np.int64(8), 0, False, None),
    (True, 0, False, None),
    ("text", 0, False, None),
    ("=", 1, False, None),
    ("=1+1", 1, True, None),
    ("  <&> spaced ", 0, True, None),
    ("x" * 40_000, 0, False, None),
    ("=A1+B1", 2, False, 0.1),
    ("=IF(A1>=0,A1,0)", 2, False, 3.0),
    ("=A1&B1", 0, False, None),
    ("=A1", 0, False, math.nan),
    ("=A1", 0, False, 2),
    (ArrayFormula("B3:C4", "=MMULT(A1:A2,B1:B2)"), 5, False, 1.25),
    (None, 5, False, 0.75),
    (None, 5, False, math.inf),
    (None, 3, False, None),
    (None, 0, False, None),
]


@pytest.mark.parametrize("strings", [True, False])
@pytest.mark.parametrize("gap", [1, 3])
def test_a_row_is_written_as_cell_xml_writes_each_cell(strings: bool, gap: int):
    cells = [(1 + k * gap, *cell) for k, cell in enumerate(CELLS)]
    table = SharedStrings() if strings else None
    written = row_cells(7, cells, table)
    reference = SharedStrings() if strings else None
    expected, previous = [], 0
    for col, value, style, is_text, cached in cells:
        ref = "" if col == previous + 1 else f"{column_letter(col)}7"
        xml = cell_xml(ref, value, style, is_text=is_text, strings=reference, cached=cached)
        if xml:
            expected.append(xml)
            previous = col
    assert written == expected
    assert (table.index if table else None) == (reference.index if reference else None)


def test_a_differences_cached_value_is_the_formula_read_back():
    grid = Grid("Sheet")
    hand, torch, delta = [(2, 2), (2, 3), (3, 2)], [(2, 6), (2, 7), (3, 6)], [(2, 10), (2, 11), (3, 10)]
    grid.set_many(hand, ["=1+1", "=2+2", "=3+3"], "forward")
    grid.check_many(hand, 1, "dense1.z", [0, 1, 2])
    grid.set_many(torch, [0.5, -1e-300, math.inf], "torch")
    formulas = [f"=ABS({a}{r}-{b}{r})" for (r, _), a, b in zip(hand, "BCB", "FGF", strict=True)]
    grid.difference(delta, formulas, hand, torch)
    grid.set(3, 11, "=ABS(B2-F2)", "delta")  # not recorded: read back from its formula
    values = {(1, "dense1.z"): np.array([0.25, 1e-300, 7.0])}

    fill_cached(grid, lambda step, term: values.get((step, term)))
    shortcut = {position: cell.cached for position, cell in grid.cells.items()}
    for cell in grid.cells.values():
        cell.cached = None
    grid.differences.clear()
    assert fill_cached(grid, lambda step, term: values.get((step, term))) == 0
    assert {position: cell.cached for position, cell in grid.cells.items()} == shortcut
    assert shortcut[(2, 10)] == 0.25 and shortcut[(3, 10)] == math.inf and shortcut[(3, 11)] == 0.25


def test_a_written_grid_reads_back(tmp_path: Path):
    book = Book("Sheet")
    grid = Grid("Sheet")
    grid.block(2, 2, np.arange(6.0).reshape(2, 3) / 7, "input")
    grid.set_many([(5, 2), (5, 3)], ["=B2+C2", "=B3*2"], "forward")
    grid.text(1, 1, "=not a formula", "header")
    write_grid(book, grid, book.first)
    save(book.workbook, tmp_path / "t.xlsx", book.sheet_data, book.strings)
    sheet = load_workbook(tmp_path / "t.xlsx")["Sheet"]
    assert [[cell.value for cell in row] for row in sheet["B2:D3"]] == (
        np.arange(6.0).reshape(2, 3) / 7
    ).tolist()
    assert (sheet["B5"].value, sheet["C5"].value, sheet["A1"].value) == ("=B2+C2", "=B3*2", "=not a formula")


def _grid_book(tmp_path: Path, name: str) -> bytes:
    """A grid of every kind of cell, 300 rows of them, written the way the writer writes it."""
    book = Book("Sheet")
    grid = Grid("Sheet")
    for row in range(1, 301):
        for col, (value, _, is_text, cached) in enumerate(CELLS, start=1):
            if isinstance(value, str) and len(value) > 100 and row > 1:
                value = f"{value[:100]} {row}"  # texts not yet in the table, in row order
            if isinstance(value, ArrayFormula):
                value = ArrayFormula(f"S{row}:S{row}", value.text)
            cell_style = ["input", "forward", "torch", None][(row + col) % 4]
            if is_text:
                grid.text(row, col, str(value), cell_style)
            else:
                grid.set(row, col, value, cell_style)
            grid.cells[(row, col)].cached = cached
    grid.set(301, 2, "=1+1", "delta")
    write_grid(book, grid, book.first)
    path = tmp_path / name
    save(book.workbook, path, book.sheet_data, book.strings)
    book.close()
    return path.read_bytes()


def test_rows_serialised_in_a_child_give_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(forked_rows, "ENABLED", False)
    plain = _grid_book(tmp_path, "plain.xlsx")
    monkeypatch.setattr(forked_rows, "ENABLED", True)
    monkeypatch.setattr(forked_rows, "MIN_CELLS", 100)
    handed = []
    monkeypatch.setattr(forked_rows.ForkedRows, "join", _recording(forked_rows.ForkedRows.join, handed))
    assert _grid_book(tmp_path, "forked.xlsx") == plain
    assert handed == [True]  # the child did serialise the rows
    # a child that meets a text the parent did not register gives up; the parent writes the rows
    monkeypatch.setattr(forked_rows, "texts", lambda rows, longest: iter(()))
    assert _grid_book(tmp_path, "fallback.xlsx") == plain
    assert handed == [True, False]
    sheet = load_workbook(tmp_path / "forked.xlsx")["Sheet"]
    assert sheet["M300"].value == "x" * 100 + " 300"


def _recording(join, handed):  # type: ignore[no-untyped-def]
    def recorded(self):  # type: ignore[no-untyped-def]
        found = join(self)
        handed.append(found)
        return found

    return recorded


def test_a_continued_stream_adopted_has_the_bytes_of_one_stream():
    content = _content(900_000, seed=3)
    expected = _plain_zip(content)
    stream = deflated.DeflatedStream(content[:1000])
    try:
        stream.add(content[1000:5000])
        dropped = stream.continuation()  # a child that failed: its bytes never reach the stream
        dropped.add(b"<row>never written</row>")
        dropped.close()
        continuation = stream.continuation()
        for start in range(5000, 800_000, 65_536):  # as a waiter reads them from the pipe
            continuation.add(content[start : min(start + 65_536, 800_000)])
        stream.adopt(continuation)
        stream.add(content[800_000:])
        stream.finish()
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", allowZip64=True) as target:
            target.writestr(zip_info("first.xml", 3), b"abc")
            deflated.write_entry(target, zip_info("xl/worksheets/sheet1.xml", stream.size), stream)
            target.writestr(zip_info("last.xml", 3), b"xyz")
    finally:
        stream.close()
    assert out.getvalue() == expected


def _traced_xor(tmp_path: Path, name: str) -> bytes:
    """xor's workbook, 30 steps, every step on the Trace (each step's rows a forked piece when
    FORK_ROWS allows it)."""
    from handgrad import harness
    from handgrad.cli import scenario_parser
    from handgrad.scenarios import SCENARIOS
    from handgrad.tracebudget import TraceSteps
    from handgrad.workbook.writer import WorkbookWriter

    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", "30"]))
    writer = WorkbookWriter(experiment, trace_steps=TraceSteps("all"))
    try:
        report = harness.run(experiment, observers=[writer.observe])
        writer.write(tmp_path / name, report)
    finally:
        writer.close()
    return (tmp_path / name).read_bytes()


def test_trace_rows_formatted_in_a_child_give_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from handgrad.workbook import tracesheet
    from handgrad.workbook.xlsx import SheetData as Data

    monkeypatch.setattr(forked_rows, "ENABLED", False)
    plain = _traced_xor(tmp_path, "plain.xlsx")
    monkeypatch.setattr(forked_rows, "ENABLED", True)
    monkeypatch.setattr(tracesheet, "FORK_ROWS", 1)  # every step's rows in a child
    handed: list[bool] = []
    monkeypatch.setattr(forked_rows.ForkedRows, "join", _recording(forked_rows.ForkedRows.join, handed))
    assert _traced_xor(tmp_path, "forked.xlsx") == plain
    assert handed and all(handed)  # the children did format the rows
    # a child that fails half-way: what it wrote is dropped and the parent formats the rows
    parent, forked = os.getpid(), Data.add_rows_forked

    def failing(self, last_row, produce, strings=None):  # type: ignore[no-untyped-def]
        def pieces():  # type: ignore[no-untyped-def]
            for k, piece in enumerate(produce()):
                if k == 1 and os.getpid() != parent:
                    raise RuntimeError("the child fails after its first piece")
                yield piece

        return forked(self, last_row, pieces, strings)

    monkeypatch.setattr(tracesheet, "PIECE_ROWS", 2)
    monkeypatch.setattr(Data, "add_rows_forked", failing)
    handed.clear()
    assert _traced_xor(tmp_path, "fallback.xlsx") == plain
    assert handed and not any(handed)
