"""bench.py's ``wb_open`` row times LibreOffice opening *and recomputing* a workbook: the CSV it
converts to shows the recomputed value of a formula, not the value cached in the file."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from openpyxl import Workbook

pytestmark = pytest.mark.libreoffice
CACHED = b"<f>A1*3</f><v>999</v>"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_opening_recomputes_every_formula(
    tmp_path: Path, libreoffice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import bench_workbooks
    import recalc

    book = Workbook()
    book.active["A1"], book.active["B1"] = 2, "=A1*3"
    plain = tmp_path / "plain.xlsx"
    book.save(plain)
    stale = tmp_path / "stale.xlsx"  # B1 carries 999 as its cached value
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(stale, "w") as target:
        for name in source.namelist():
            content = source.read(name)
            if name == "xl/worksheets/sheet1.xml":
                content, count = re.subn(rb"<f>A1\*3</f><v ?/>|<f>A1\*3</f><v></v>", CACHED, content)
                assert count == 1
            target.writestr(name, content)

    profile = recalc.make_profile(tmp_path / "profile")
    written = bench_workbooks.open_as_csv(libreoffice, profile, stale, tmp_path / "out")
    assert written.read_text().split() == ["2,6"]
