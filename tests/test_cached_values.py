"""Every formula cell carries its value: readers that do not recompute (openpyxl ``data_only``,
pandas, file previews) see numbers, and the numbers are what LibreOffice computes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from openpyxl import load_workbook

from handgrad import cli

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "spreadsheets").glob("*.xlsx"))
FRESH = [
    (),
    ("--mode", "batch"),
    ("--fold-bias", "--activation", "relu"),
    ("--optimizer", "adam", "--lr", "0.05"),
]


def _recalc():
    spec = importlib.util.spec_from_file_location("handgrad_scripts_recalc", ROOT / "scripts" / "recalc.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


recalc = _recalc()


def _fresh(tmp_path: Path, index: int, options: tuple[str, ...]) -> Path:
    path = tmp_path / f"fresh{index}.xlsx"
    assert cli.main(["compare", "xor", "--steps", "40", "--quiet", *options, "--xlsx", str(path)]) == 0
    return path


def _cached(path: Path) -> dict[str, dict[tuple[int, int], object]]:
    """Every formula cell's stored value, as openpyxl ``data_only`` reads it."""
    with recalc.XlsxReader(path) as reader:
        formulas, _ = recalc.formula_cells(reader)
    book = load_workbook(path, data_only=True)
    out = {
        sheet: {(r, c): book[sheet].cell(r, c).value for r, c in cells} for sheet, cells in formulas.items()
    }
    book.close()
    return out


def _assert_numbers(path: Path) -> int:
    cached = _cached(path)
    blank = [(sheet, pos) for sheet, cells in cached.items() for pos, v in cells.items() if not _number(v)]
    assert not blank, f"{path.name}: {len(blank)} formula cells without a cached number, first {blank[:5]}"
    return sum(len(cells) for cells in cached.values())


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@pytest.mark.parametrize("options", FRESH, ids=["-".join(o) or "default" for o in FRESH])
def test_a_fresh_workbook_has_a_number_in_every_formula_cell(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    assert _assert_numbers(_fresh(tmp_path, 0, options)) > 1000


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_each_committed_workbook_has_a_number_in_every_formula_cell(path: Path) -> None:
    """Fails on workbooks written before cached values existed: regenerate with make spreadsheets."""
    assert _assert_numbers(path) > 1000


@pytest.mark.libreoffice
def test_cached_values_equal_libreoffices_recalculation(libreoffice: str, tmp_path: Path) -> None:
    paths = [_fresh(tmp_path, i, options) for i, options in enumerate(FRESH)] + list(EXAMPLES)
    outputs, _ = recalc.recalculate(paths, tmp_path / "recomputed")
    for source, target in outputs.items():
        cached = _cached(source)
        with recalc.XlsxReader(target) as reader:
            values = recalc.recomputed_values(reader, {s: set(cells) for s, cells in cached.items()})
        compared = 0
        for sheet, cells in cached.items():
            for position, stored in cells.items():
                got = values[sheet].get(position)
                assert got is not None and _number(got.value), f"{source.name} {sheet}{position}: {got}"
                assert _number(stored), f"{source.name} {sheet}{position}: no cached number"
                difference = abs(float(got.value) - float(stored))
                assert difference <= recalc.ABS_TOL or difference <= recalc.REL_TOL * abs(float(stored)), (
                    f"{source.name} {sheet}{position}: cached {stored!r}, LibreOffice {got.value!r}"
                )
                compared += 1
        assert compared > 1000, source.name
