"""Render the diagnostic charts of a ``deep`` run: workbook → LibreOffice PDF → PNG for the manual.

    python scripts/deep_charts.py                          # manual/img/deep-charts.png
    python scripts/deep_charts.py --xlsx /tmp/deep.xlsx -- --depth 8 --activation relu --init torch

Runs ``handgrad compare deep`` with the options after ``--`` (default: the manual's run), writes a
small workbook (a "Charts" sheet holding the three native charts, and the Diagnostics sheet they
read), converts it with headless LibreOffice (a private profile) to PDF and the first page to PNG
with ``pdftoppm`` (Debian ``poppler-utils``). Exit 1 if the run disagrees with torch or a
conversion produced nothing (LibreOffice exits 0 even then).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "reference"))

from openpyxl.worksheet.properties import PageSetupProperties  # noqa: E402

from handgrad import harness  # noqa: E402
from handgrad.atomic import atomic_path  # noqa: E402
from handgrad.cli import scenario_parser  # noqa: E402
from handgrad.scenarios import SCENARIOS  # noqa: E402
from handgrad.workbook.diagnostics_sheet import (  # noqa: E402
    DiagnosticsHistory,
    add_diagnostic_charts,
    diagnostic_charts,
    diagnostics_grid,
)
from handgrad.workbook.grid import Grid  # noqa: E402
from handgrad.workbook.package import save  # noqa: E402
from handgrad.workbook.writer import Book, write_grid  # noqa: E402

DEFAULT_RUN = ["--depth", "8", "--activation", "sigmoid", "--init-gain", "4", "--steps", "300"]


def write_charts_workbook(path: Path, options: list[str]) -> harness.Report:
    experiment = SCENARIOS["deep"].build(scenario_parser("deep").parse_args(options))
    history = DiagnosticsHistory(experiment.steps)
    report = harness.run(experiment, observers=[history])
    book = Book("Charts")
    charts_sheet = book.first
    charts_sheet.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
    charts_sheet.page_setup.fitToWidth = 1
    charts_sheet.page_setup.fitToHeight = 1
    charts_sheet.page_setup.orientation = "landscape"
    data_sheet = write_grid(book, diagnostics_grid(experiment, report, history))
    title = Grid("Charts")
    title.text(1, 1, f"handgrad compare deep {' '.join(options)}: {report.verdict()}", "note")
    write_grid(book, title, charts_sheet)
    add_diagnostic_charts(charts_sheet, diagnostic_charts(data_sheet, history), top=3, col=1, per_row=2)
    with atomic_path(path) as temporary:
        save(book.workbook, temporary, book.sheet_data, book.strings)
    book.close()
    return report


def render_png(xlsx: Path, png: Path, dpi: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        profile = Path(work) / "profile"
        command = [
            "soffice",
            f"-env:UserInstallation=file://{profile}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            work,
            str(xlsx),
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=300)
        pdf = Path(work) / (xlsx.stem + ".pdf")
        if not pdf.exists():
            raise SystemExit(f"LibreOffice wrote no PDF for {xlsx}")
        prefix = Path(work) / "page"
        page = ["-r", str(dpi), "-f", "1", "-l", "1", "-singlefile"]
        subprocess.run(["pdftoppm", *page, str(pdf), str(prefix)], check=True, timeout=120)
        x, y, w, h = content_box(prefix.with_suffix(".ppm"), margin=12)
        crop = ["-x", str(x), "-y", str(y), "-W", str(w), "-H", str(h)]
        subprocess.run(["pdftoppm", "-png", *page, *crop, str(pdf), str(prefix)], check=True, timeout=120)
        png.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(prefix.with_suffix(".png"), png)


def content_box(ppm: Path, margin: int) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the non-white part of a binary PPM page, plus a margin."""
    data = ppm.read_bytes()
    fields = data.split(maxsplit=4)  # P6, width, height, maxval, pixels
    width, height = int(fields[1]), int(fields[2])
    pixels = np.frombuffer(fields[4][: width * height * 3], dtype=np.uint8).reshape(height, width, 3)
    ink = np.argwhere((pixels < 250).any(axis=2))
    if ink.size == 0:
        return 0, 0, width, height
    (top, left), (bottom, right) = ink.min(axis=0), ink.max(axis=0)
    x, y = max(int(left) - margin, 0), max(int(top) - margin, 0)
    return x, y, min(int(right) + margin, width - 1) - x + 1, min(int(bottom) + margin, height - 1) - y + 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--png", default=str(ROOT / "manual" / "img" / "deep-charts.png"))
    parser.add_argument("--xlsx", help="keep the workbook here (default: a temporary file)")
    parser.add_argument("--dpi", type=int, default=80)
    parser.add_argument("options", nargs="*", help="options of handgrad compare deep (after --)")
    args = parser.parse_args()
    options = args.options or DEFAULT_RUN
    with tempfile.TemporaryDirectory() as work:
        xlsx = Path(args.xlsx) if args.xlsx else Path(work) / "deep-charts.xlsx"
        report = write_charts_workbook(xlsx, options)
        print(f"deep: {report.verdict()}")
        if not report.ok:
            return 1
        render_png(xlsx, Path(args.png), args.dpi)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
