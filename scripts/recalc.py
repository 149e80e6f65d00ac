#!/usr/bin/env python3
"""Recompute handgrad workbooks in headless LibreOffice and check every formula cell.

    python scripts/recalc.py WORKBOOK.xlsx [WORKBOOK.xlsx ...] [--keep DIR]

LibreOffice runs with a private profile whose ``OOXMLRecalcMode`` (and ``ODFRecalcMode``) is 0,
"always recalculate", so no value survives from the file: every formula is computed by
LibreOffice's engine. The recomputed copy is read back with openpyxl, and

- every formula cell (and every cell of an array formula's range) must hold a value, not an
  error (``#NUM!``, ``#VALUE!``, ``Err:502``, ...);
- every cell the hidden Checks sheet names must equal the hand side's number of the same term,
  step and element (read from the Trace sheet): |recomputed − hand| ≤ 1e-12·|hand| or ≤ 1e-12.
  LibreOffice stores 15 significant digits, so the rel bound sits three digits above that.

Formulas are also checked for functions newer than Excel 2007. LibreOffice runs with its default
threaded calculation, as a reader's copy does; ``--no-threads`` turns it off (see the NOTE below).

Exit 0: everything agrees; 1: a difference or an error value; 2: a workbook could not be
checked (missing file, LibreOffice missing or its conversion failed).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from openpyxl.utils import range_boundaries
from openpyxl.utils.cell import column_index_from_string

REL_TOL = 1e-12
ABS_TOL = 1e-12
REL_FLOOR = 1e-6  # the largest rel reported is over cells whose hand value is at least this
CHECKS_TITLE = "Checks"
TRACE_PREFIX = "Trace"
ERROR_TEXT = re.compile(r"^(#(NULL!|DIV/0!|VALUE!|REF!|NAME\?|NUM!|N/A|GETTING_DATA)|Err:\d+)$")
# functions that Excel 2007 does not have (written as _xlfn.NAME in the file when used)
NEWER_FUNCTIONS = {
    "AGGREGATE", "CEILING.MATH", "CONCAT", "FILTER", "FLOOR.MATH", "IFNA", "IFS", "LAMBDA", "LET",
    "MAXIFS", "MINIFS", "SEQUENCE", "SORT", "SORTBY", "SWITCH", "TEXTJOIN", "UNIQUE", "XLOOKUP",
    "XMATCH", "STDEV.S", "STDEV.P", "VAR.S", "VAR.P", "NORM.DIST", "NORM.S.DIST", "PERCENTILE.INC",
    "RANDARRAY", "XOR", "DAYS", "ISOWEEKNUM", "SHEET", "SHEETS", "FORMULATEXT", "ISFORMULA",
}  # fmt: skip
_FUNCTION = re.compile(r"([A-Z][A-Z0-9.]*)\(")

PROFILE_XCU = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Calc/Formula/Load"><prop oor:name="OOXMLRecalcMode" oor:op="fuse"><value>0</value></prop></item>
<item oor:path="/org.openoffice.Office.Calc/Formula/Load"><prop oor:name="ODFRecalcMode" oor:op="fuse"><value>0</value></prop></item>
{threads}</oor:items>
"""  # noqa: E501
# NOTE: LibreOffice 7.4 computes runs of similar formulas down a column ("formula groups") in
# parallel threads, and got some wrong: on an earlier batch Training sheet, Training!L13 = DS12
# read 0 while DS12 held 0.147... (a group reading the row above of a group that reads it back).
# The live sheets now avoid that pattern, and recalc.py checks with LibreOffice's defaults, as a
# reader opens the file; --no-threads computes cell by cell, to tell such a bug from a wrong formula.
NO_THREADS = (
    '<item oor:path="/org.openoffice.Office.Calc/Formula/Calculation"><prop '
    'oor:name="UseThreadedCalculationForFormulaGroups" oor:op="fuse"><value>false</value></prop></item>\n'
)


class RecalcError(RuntimeError):
    """A workbook could not be recomputed (LibreOffice missing, or its conversion failed)."""


def find_soffice() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def make_profile(root: Path, *, threaded: bool = True) -> str:
    """A fresh LibreOffice user profile under ``root`` set to always recalculate; its URL."""
    user = root / "user"
    user.mkdir(parents=True, exist_ok=True)
    xcu = PROFILE_XCU.format(threads="" if threaded else NO_THREADS)
    (user / "registrymodifications.xcu").write_text(xcu, encoding="utf-8")
    return root.resolve().as_uri()


def recalculate(
    workbooks: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    soffice: str | None = None,
    timeout: float = 600,
    threaded: bool = True,
) -> tuple[dict[Path, Path], float]:
    """Recompute ``workbooks`` in headless LibreOffice into ``out_dir``; return {input: output}
    and the seconds LibreOffice took (one process for all of them, a private profile)."""
    soffice = soffice or find_soffice()
    if soffice is None:
        raise RecalcError("LibreOffice (soffice) is not installed")
    inputs = [Path(path).resolve() for path in workbooks]
    for path in inputs:
        if not path.is_file():
            raise RecalcError(f"no such workbook: {path}")
    names = [path.name for path in inputs]
    if len(set(names)) != len(names):
        raise RecalcError("workbooks to recompute together need distinct file names")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for path in inputs:
        if path.parent == out:
            raise RecalcError(f"{path} is in the output directory; it would be overwritten")
        (out / path.name).unlink(missing_ok=True)  # so a stale copy cannot pass for a conversion
    with tempfile.TemporaryDirectory(prefix="handgrad-lo-") as profile:
        command = [
            soffice,
            "--headless",
            "--norestore",
            "--nologo",
            f"-env:UserInstallation={make_profile(Path(profile), threaded=threaded)}",
            "--convert-to",
            "xlsx",
            "--outdir",
            str(out),
            *map(str, inputs),
        ]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise RecalcError(f"LibreOffice did not finish within {timeout:.0f} s") from None
        seconds = time.perf_counter() - start
    results = {}
    for path in inputs:
        target = out / path.name
        # LibreOffice exits 0 even when a conversion fails: the output file is the only proof
        if not target.is_file() or target.stat().st_size == 0:
            detail = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise RecalcError(
                f"LibreOffice did not convert {path.name} (exit {done.returncode}: {detail[0]})"
            )
        results[path] = target
    return results, seconds


@dataclass
class CheckResult:
    workbook: Path
    checked: int = 0  # formula cells compared with the hand side
    others: int = 0  # formula cells with no term behind them (|Δ|, helpers): must not be errors
    largest_rel: float = 0.0
    largest_abs: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_CELL_REF = re.compile(r"([A-Z]+)(\d+)")


@dataclass(frozen=True)
class Cell:
    value: object  # float, str, bool or None; an error as its text (#NUM!)
    formula: str | None = None  # the formula's text without "=", when the cell holds one
    array_ref: str | None = None  # the range of an array formula anchored here
    error: bool = False


class XlsxReader:
    """A small streaming reader of sheet cells (openpyxl's read-only mode reads ~5,000 rows a
    second; this reads the XML with ElementTree's C parser)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.zip = zipfile.ZipFile(path)
        names = set(self.zip.namelist())
        rels = ElementTree.fromstring(self.zip.read("xl/_rels/workbook.xml.rels"))
        targets = {}
        for rel in rels:
            target = rel.get("Target", "")
            targets[rel.get("Id")] = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
        book = ElementTree.fromstring(self.zip.read("xl/workbook.xml"))
        self.sheets: dict[str, str] = {}
        for sheet in book.iter(f"{_NS}sheet"):
            self.sheets[sheet.get("name", "")] = targets[sheet.get(f"{_REL_NS}id")]
        self._columns: dict[str, int] = {}
        self.shared: list[str] = []
        if "xl/sharedStrings.xml" in names:
            for item in ElementTree.fromstring(self.zip.read("xl/sharedStrings.xml")).iter(f"{_NS}si"):
                self.shared.append("".join(text.text or "" for text in item.iter(f"{_NS}t")))

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> XlsxReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cells(self, title: str, max_row: int | None = None) -> Iterable[tuple[int, int, Cell]]:
        """(row, column, cell) of every cell written on sheet ``title``, in order."""
        row_tag = f"{_NS}row"
        with self.zip.open(self.sheets[title]) as stream:
            row = 0
            for _, element in ElementTree.iterparse(stream):
                if element.tag != row_tag:
                    continue
                row = int(element.get("r") or row + 1)
                if max_row is not None and row > max_row:
                    return
                col = 0
                for cell in element:
                    col = self._column(cell, col, title)
                    yield row, col, self._cell(cell)
                element.clear()

    def rows(self, title: str, max_col: int) -> Iterable[tuple[int, list[object]]]:
        """(row, values of columns 1..max_col) of every row of sheet ``title``: the fast path for
        long sheets of plain values (the Trace)."""
        row_tag, v_tag, t_tag = f"{_NS}row", f"{_NS}v", f"{_NS}t"
        column = self._column
        shared = self.shared
        with self.zip.open(self.sheets[title]) as stream:
            row = 0
            for _, element in ElementTree.iterparse(stream):
                if element.tag != row_tag:
                    continue
                row = int(element.get("r") or row + 1)
                values: list[object] = [None] * max_col
                col = 0
                for cell in element:
                    col = column(cell, col, title)
                    if col > max_col:
                        continue
                    kind = cell.get("t")
                    if kind == "inlineStr":
                        values[col - 1] = "".join(t.text or "" for t in cell.iter(t_tag))
                        continue
                    text = cell.findtext(v_tag)
                    if text is None:
                        continue
                    if kind == "s":
                        values[col - 1] = shared[int(text)]
                    elif kind in ("str", "e"):
                        values[col - 1] = text
                    elif kind == "b":
                        values[col - 1] = text == "1"
                    else:
                        values[col - 1] = float(text)
                yield row, values
                element.clear()

    def _column(self, cell: ElementTree.Element, previous: int, title: str) -> int:
        """A cell's column: its ``r``, or the column after the cell before it in its row (``r``
        is optional in SpreadsheetML; handgrad leaves it out wherever it adds nothing)."""
        ref = cell.get("r")
        if ref is None:
            return previous + 1
        letters = ref.rstrip("0123456789")
        col = self._columns.get(letters)
        if col is None:
            if not letters or _CELL_REF.fullmatch(ref) is None:
                raise ValueError(f"{title}: a cell reference {ref!r} that is not a cell's address")
            col = self._columns[letters] = column_index_from_string(letters)
        return col

    def _cell(self, element: ElementTree.Element) -> Cell:
        kind = element.get("t", "n")
        formula = element.find(f"{_NS}f")
        text = element.findtext(f"{_NS}v")
        value: object
        if kind == "s":
            value = self.shared[int(text)] if text is not None else None
        elif kind == "inlineStr":
            value = "".join(t.text or "" for t in element.iter(f"{_NS}t"))
        elif kind == "b":
            value = text == "1" if text is not None else None
        elif kind in ("str", "e"):
            value = text
        else:
            value = float(text) if text not in (None, "") else None
        array_ref = None
        if formula is not None and formula.get("t") == "array":
            array_ref = formula.get("ref")
        return Cell(
            value,
            formula.text if formula is not None else None,
            array_ref,
            error=kind == "e" or (isinstance(value, str) and bool(ERROR_TEXT.match(value.strip()))),
        )


def _expand(ref: str) -> Iterable[tuple[int, int]]:
    min_col, min_row, max_col, max_row = range_boundaries(ref)
    for row in range(min_row, max_row + 1):
        for col in range(min_col, max_col + 1):
            yield row, col


def formula_cells(reader: XlsxReader) -> tuple[dict[str, set[tuple[int, int]]], list[str]]:
    """Every formula cell of every sheet but the Trace (plain numbers) as {sheet: {(row, col)}},
    array formulas expanded to their whole range; and the problems the formulas' text shows."""
    cells: dict[str, set[tuple[int, int]]] = {}
    problems: list[str] = []
    for title in reader.sheets:
        if title.startswith(TRACE_PREFIX) or title == CHECKS_TITLE:
            continue
        found: set[tuple[int, int]] = set()
        for row, col, cell in reader.cells(title):
            if cell.array_ref is not None:
                found.update(_expand(cell.array_ref))
            elif cell.formula is not None:
                found.add((row, col))
            else:
                continue
            problems.extend(_lint(title, _address((row, col)), cell.formula or ""))
        if found:
            cells[title] = found
    return cells, problems


def _lint(sheet: str, coordinate: str, text: str) -> list[str]:
    problems = []
    if "_xlfn." in text:
        problems.append(f"{sheet}!{coordinate}: uses a function newer than Excel 2007 ({text[:80]})")
    for name in _FUNCTION.findall(text.upper()):
        if name in NEWER_FUNCTIONS:
            problems.append(f"{sheet}!{coordinate}: {name} is newer than Excel 2007")
    if len(text) + 1 > 8192:
        problems.append(f"{sheet}!{coordinate}: formula of {len(text) + 1} characters (Excel allows 8,192)")
    return problems


def read_checks(reader: XlsxReader) -> list[tuple[str, int, int, int, int, str, int, int, int]]:
    """The Checks sheet's runs: (sheet, column, first row, last row, first step, term, first index,
    step +, index +): row ``first + k`` computes element ``index + k·(index +)`` at step
    ``step + k·(step +)``."""
    if CHECKS_TITLE not in reader.sheets:
        return []
    runs = []
    for row, values in reader.rows(CHECKS_TITLE, 9):
        if row == 1 or values[0] is None:
            continue
        sheet, column, first, last, step, term, index, step_plus, index_plus = values
        where = (str(sheet), column_index_from_string(str(column)))
        numbers = tuple(int(value) for value in (first, last, step))  # type: ignore[call-overload]
        # a workbook written before the strides existed: each next row is the next step
        strides = (1, 0) if step_plus is None else (int(step_plus), int(index_plus))  # type: ignore[call-overload]
        runs.append((*where, *numbers, str(term), int(index), *strides))  # type: ignore[call-overload]
    return runs  # type: ignore[return-value]


def read_hand(reader: XlsxReader, wanted: set[tuple[int, str]]) -> dict[tuple[int, str], list[float]]:
    """The hand column of the Trace sheets for the wanted (step, term) pairs, in C order."""
    found: dict[tuple[int, str], list[float]] = {}
    if not wanted:
        return found
    last_step = max(step for step, _ in wanted)
    for title in reader.sheets:
        if not title.startswith(TRACE_PREFIX):
            continue
        for row, values in reader.rows(title, 6):
            step = values[0]
            if row == 1 or not isinstance(step, float):
                continue
            if step > last_step:
                return found
            key = (int(step), f"{values[2]}.{values[3]}")
            if key in wanted:
                hand = values[5]
                found.setdefault(key, []).append(float(hand) if isinstance(hand, float) else math.nan)
    return found


def recomputed_values(
    reader: XlsxReader, cells: dict[str, set[tuple[int, int]]]
) -> dict[str, dict[tuple[int, int], Cell]]:
    values: dict[str, dict[tuple[int, int], Cell]] = {}
    for title, wanted in cells.items():
        got: dict[tuple[int, int], Cell] = {}
        if title in reader.sheets:
            last_row = max(row for row, _ in wanted)
            for row, col, cell in reader.cells(title, max_row=last_row):
                if (row, col) in wanted:
                    got[(row, col)] = cell
        values[title] = got
    return values


def check_workbook(original: str | os.PathLike[str], recomputed: str | os.PathLike[str]) -> CheckResult:
    """Compare the recomputed copy of ``original`` with the hand side's numbers."""
    original, recomputed = Path(original), Path(recomputed)
    result = CheckResult(original)
    with XlsxReader(original) as reader:
        formulas, problems = formula_cells(reader)
        result.problems.extend(problems)
        runs = read_checks(reader)
        expected: dict[str, dict[tuple[int, int], tuple[int, str, int]]] = {}
        for sheet, col, first, last, step, term, index, step_plus, index_plus in runs:
            for k, row in enumerate(range(first, last + 1)):
                expected.setdefault(sheet, {})[(row, col)] = (
                    step + k * step_plus,
                    term,
                    index + k * index_plus,
                )
        wanted_cells = {title: set(found) for title, found in formulas.items()}
        for sheet, found in expected.items():
            wanted_cells.setdefault(sheet, set()).update(found)
        pairs = {(step, term) for found in expected.values() for step, term, _ in found.values()}
        hand = read_hand(reader, pairs)
    with XlsxReader(recomputed) as reader:
        values = recomputed_values(reader, wanted_cells)
    for sheet in sorted(wanted_cells):
        got = values.get(sheet, {})
        checks = expected.get(sheet, {})
        for position in sorted(wanted_cells[sheet]):
            where = f"{sheet}!{_address(position)}"
            found = got.get(position)
            value = found.value if found is not None else None
            if found is not None and found.error:
                result.problems.append(f"{where}: recomputed to the error {value}")
                continue
            if position not in checks:
                if position in formulas.get(sheet, ()):
                    result.others += 1
                    if value is None:
                        result.problems.append(f"{where}: no value after recomputation")
                continue
            step, term, index = checks[position]
            series = hand.get((step, term))
            if series is None or index >= len(series):
                result.problems.append(
                    f"{where}: no hand value for {term}[{index}] at step {step} on the Trace"
                )
                continue
            expected_value = series[index]
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                result.problems.append(
                    f"{where} ({term}[{index}], step {step}): recomputed to {value!r}, "
                    f"hand {expected_value!r}"
                )
                continue
            difference = abs(float(value) - expected_value)
            rel = (
                difference / abs(expected_value) if expected_value else (0.0 if difference == 0 else math.inf)
            )
            result.checked += 1
            if abs(expected_value) >= REL_FLOOR:
                result.largest_rel = max(result.largest_rel, rel)
            if not (difference <= ABS_TOL or difference <= REL_TOL * abs(expected_value)):
                result.problems.append(
                    f"{where} ({term}[{index}], step {step}): recomputed {float(value)!r}, hand "
                    f"{expected_value!r}, |Δ| {difference:.3e}, rel {rel:.3e}"
                )
            result.largest_abs = max(result.largest_abs, difference)
    return result


def _address(position: tuple[int, int]) -> str:
    from openpyxl.utils import get_column_letter

    return f"{get_column_letter(position[1])}{position[0]}"


def recalc_and_check(
    workbooks: Sequence[str | os.PathLike[str]],
    *,
    keep: str | os.PathLike[str] | None = None,
    threaded: bool = True,
) -> tuple[list[CheckResult], float]:
    """Recompute every workbook in LibreOffice (one process) and check each; (results, seconds)."""
    with tempfile.TemporaryDirectory(prefix="handgrad-recalc-") as scratch:
        out = Path(keep) if keep else Path(scratch)
        outputs, seconds = recalculate(workbooks, out, threaded=threaded)
        return [check_workbook(source, target) for source, target in outputs.items()], seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workbooks", nargs="+", metavar="WORKBOOK")
    parser.add_argument("--keep", metavar="DIR", help="keep the recomputed copies in DIR")
    parser.add_argument(
        "--no-threads",
        action="store_true",
        help="turn off LibreOffice's threaded calculation of formula groups (on by default, as for a reader)",
    )
    parser.add_argument("--max-problems", type=int, default=20, help="problems listed per workbook")
    args = parser.parse_args(argv)
    try:
        results, seconds = recalc_and_check(args.workbooks, keep=args.keep, threaded=not args.no_threads)
    except RecalcError as error:
        print(f"recalc: error: {error}", file=sys.stderr)
        return 2
    print(f"recalc: LibreOffice recomputed {len(results)} workbook(s) in {seconds:.1f} s")
    status = 0
    for result in results:
        if result.ok:
            print(
                f"{result.workbook}: ok: {result.checked:,} formula cells equal the hand side "
                f"(largest |Δ| {result.largest_abs:.1e}, largest rel {result.largest_rel:.1e} where "
                f"|hand| ≥ {REL_FLOOR:g}); "
                f"{result.others:,} other formula cells recomputed without error"
            )
            continue
        status = 1
        print(
            f"{result.workbook}: FAIL: {len(result.problems):,} problem(s); {result.checked:,} cells compared"
        )
        for problem in result.problems[: args.max_problems]:
            print(f"  {problem}")
        if len(result.problems) > args.max_problems:
            print(f"  ... and {len(result.problems) - args.max_problems:,} more")
    return status


if __name__ == "__main__":
    sys.exit(main())
