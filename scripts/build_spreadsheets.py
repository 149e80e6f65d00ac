#!/usr/bin/env python3
"""Regenerate the example workbooks in ``spreadsheets/`` (or check that they are current).

    python scripts/build_spreadsheets.py            # write spreadsheets/*.xlsx
    python scripts/build_spreadsheets.py --check    # exit 1 when a committed workbook is stale
    python scripts/build_spreadsheets.py --png      # also render manual/img/*.png (each sheet)

Each example is ``handgrad compare xor ... --xlsx`` with the options below; the output is
byte-identical for identical input. ``--check`` builds into a temporary folder and compares: the
files must be identical, except for the library versions on the Summary (a CI machine may run
another Python patch release), which live in the shared string table.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "reference"))

from handgrad import cli  # noqa: E402

STEPS = 200  # long enough to watch the loss fall, small enough to commit five of them
EXAMPLES: dict[str, list[str]] = {
    "xor_sigmoid.xlsx": ["--activation", "sigmoid"],
    "xor_tanh.xlsx": ["--activation", "tanh"],
    "xor_relu.xlsx": ["--activation", "relu"],
    "xor_batch.xlsx": ["--mode", "batch"],
    "xor_fold_bias.xlsx": ["--fold-bias"],
    "xor_adam.xlsx": ["--optimizer", "adam", "--lr", "0.05"],
    "xor_momentum.xlsx": ["--momentum", "0.9", "--lr", "0.1"],
    "xor_rmsprop_cosine_clip.xlsx": [
        "--optimizer",
        "rmsprop",
        "--lr",
        "0.01",
        "--centered",
        "--schedule",
        "cosine",
        "--clip-norm",
        "0.5",
    ],  # fmt: skip
}
OUT = ROOT / "spreadsheets"
PNG = ROOT / "manual" / "img" / "walkthrough.png"
IMG = ROOT / "manual" / "img"
_VERSION = re.compile(r"^\d+(\.\d+)+([+.\-_a-zA-Z0-9]*)$")
_NS = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def arguments(name: str) -> list[str]:
    return ["compare", "xor", "--steps", str(STEPS), "--quiet", *EXAMPLES[name]]


def build(out_dir: Path, names: list[str] | None = None) -> list[Path]:
    """Write the examples into ``out_dir``; raise if a comparison does not pass."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or list(EXAMPLES):
        target = out_dir / name
        status = cli.main([*arguments(name), "--xlsx", str(target)])
        if status != 0:
            raise RuntimeError(f"{name}: handgrad compare exited {status}")
        written.append(target)
    return written


def _strings(data: bytes) -> list[str]:
    root = ElementTree.fromstring(data)
    return ["".join(t.text or "" for t in item.iter(f"{_NS}t")) for item in root.iter(f"{_NS}si")]


def differences(committed: Path, fresh: Path) -> list[str]:
    """Why ``committed`` is not what the code generates now (empty when it is)."""
    if not committed.is_file():
        return [f"{committed.name}: missing (run python scripts/build_spreadsheets.py)"]
    if committed.read_bytes() == fresh.read_bytes():
        return []
    with zipfile.ZipFile(committed) as old, zipfile.ZipFile(fresh) as new:
        if old.namelist() != new.namelist():
            return [f"{committed.name}: the parts differ ({old.namelist()} vs {new.namelist()})"]
        found = []
        for name in new.namelist():
            before, after = old.read(name), new.read(name)
            if before == after:
                continue
            if name == "xl/sharedStrings.xml":
                a, b = _strings(before), _strings(after)
                changed = [(x, y) for x, y in zip(a, b, strict=False) if x != y]
                if len(a) == len(b) and all(_VERSION.match(x) and _VERSION.match(y) for x, y in changed):
                    continue  # only library versions differ
                found.append(f"{committed.name}: text differs, e.g. {changed[:3]}")
                continue
            found.append(f"{committed.name}: {name} differs")
        return found


def check(committed_dir: Path = OUT) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="handgrad-sheets-") as scratch:
        fresh = build(Path(scratch))
        return [problem for path in fresh for problem in differences(committed_dir / path.name, path)]


def render_walkthrough(target: Path = PNG, *, dpi: int = 170) -> Path:
    """The first page of the xor Walkthrough sheet as a PNG: the sheet alone in a workbook,
    recomputed and printed to PDF by headless LibreOffice, the page rasterised by pdftoppm."""
    import shutil
    import subprocess

    from openpyxl.worksheet.page import PageMargins
    from openpyxl.worksheet.properties import PageSetupProperties

    from handgrad import harness
    from handgrad.atomic import atomic_path
    from handgrad.cli import scenario_parser
    from handgrad.scenarios import SCENARIOS
    from handgrad.workbook.walkthrough import walkthrough_grids
    from handgrad.workbook.writer import Book, write_grid

    sys.path.insert(0, str(ROOT / "scripts"))
    from recalc import find_soffice, make_profile

    soffice, pdftoppm = find_soffice(), shutil.which("pdftoppm")
    if soffice is None or pdftoppm is None:
        raise RuntimeError("rendering needs LibreOffice (soffice) and pdftoppm (poppler-utils)")
    experiment = SCENARIOS["xor"].build(scenario_parser("xor").parse_args(["--steps", "1"]))
    captured: dict = {}
    harness.run(
        experiment, observers=[lambda step, hand, torch, checks: captured.update({step: (hand, torch)})]
    )
    (grid,) = walkthrough_grids(experiment, captured, steps=[1])
    with tempfile.TemporaryDirectory(prefix="handgrad-png-") as scratch:
        work = Path(scratch)
        book = Book(grid.title)
        sheet = write_grid(book, grid, book.first)
        sheet.page_setup.orientation = "landscape"
        sheet.page_setup.paperSize = 9  # A4
        sheet.page_setup.fitToWidth = 1
        sheet.page_setup.fitToHeight = 0
        sheet.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
        sheet.print_options.gridLines = True
        sheet.page_margins = PageMargins(left=0.2, right=0.2, top=0.2, bottom=0.2, header=0, footer=0)
        book.save(work / "walkthrough.xlsx")
        book.close()
        profile = make_profile(work / "profile")
        command = [soffice, "--headless", "--norestore", f"-env:UserInstallation={profile}"]
        command += ["--convert-to", "pdf", "--outdir", str(work), str(work / "walkthrough.xlsx")]
        subprocess.run(command, capture_output=True, check=False, timeout=300)
        if not (work / "walkthrough.pdf").is_file():
            raise RuntimeError("LibreOffice did not print the walkthrough to PDF")
        pages = ["-f", "1", "-l", "1", "-singlefile"]
        pdf, png = str(work / "walkthrough.pdf"), str(work / "page")
        subprocess.run([pdftoppm, "-png", "-r", str(dpi), *pages, pdf, png], check=True, timeout=300)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as temporary:
            temporary.write_bytes((work / "page.png").read_bytes())
    return target


def render_sheets(folder: Path = IMG, *, dpi: int = 110, rows: int = 45, cols: int = 18) -> list[Path]:
    """One PNG per sheet of the default xor workbook (manual/workbook.md shows them): the workbook
    written by ``handgrad compare xor``, each sheet in turn the only visible one, its top-left
    ``rows`` × ``cols`` cells printed to PDF by headless LibreOffice (which recomputes every
    formula first) and the page rasterised by pdftoppm. Hidden sheets (Checks, chart data) are
    skipped."""
    import shutil
    import subprocess

    from openpyxl import load_workbook
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.page import PageMargins
    from openpyxl.worksheet.properties import PageSetupProperties

    from handgrad.atomic import atomic_path
    from handgrad.cli import main as cli_main

    sys.path.insert(0, str(ROOT / "scripts"))
    from recalc import find_soffice, make_profile

    soffice, pdftoppm = find_soffice(), shutil.which("pdftoppm")
    if soffice is None or pdftoppm is None:
        raise RuntimeError("rendering needs LibreOffice (soffice) and pdftoppm (poppler-utils)")
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="handgrad-png-") as scratch:
        work = Path(scratch)
        source = work / "xor.xlsx"
        if cli_main(["compare", "xor", "--xlsx", str(source)]) != 0:
            raise RuntimeError("handgrad compare xor failed")
        profile = make_profile(work / "profile")
        names = [ws.title for ws in load_workbook(source, read_only=True).worksheets]
        for name in names:
            book = load_workbook(source)
            if book[name].sheet_state != "visible":
                continue
            for sheet in book.worksheets:
                if sheet.title != name:
                    sheet.sheet_state = "hidden"
            sheet = book[name]
            book.active = book.worksheets.index(sheet)
            sheet.print_area = f"A1:{get_column_letter(cols)}{rows}"
            sheet.page_setup.orientation = "landscape"
            sheet.page_setup.paperSize = 9  # A4
            sheet.page_setup.fitToWidth = 1
            sheet.page_setup.fitToHeight = 1
            sheet.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
            sheet.print_options.gridLines = True
            sheet.page_margins = PageMargins(left=0.2, right=0.2, top=0.2, bottom=0.2, header=0, footer=0)
            slug = re.sub(r"-\d+$", "", name.lower().replace(" ", "-"))  # "Walkthrough 2": walkthrough
            book.save(work / f"{slug}.xlsx")
            command = [soffice, "--headless", "--norestore", f"-env:UserInstallation={profile}"]
            command += ["--convert-to", "pdf", "--outdir", str(work), str(work / f"{slug}.xlsx")]
            subprocess.run(command, capture_output=True, check=False, timeout=300)
            pdf = work / f"{slug}.pdf"
            if not pdf.is_file():
                raise RuntimeError(f"LibreOffice did not print the {name} sheet to PDF")
            pages = ["-f", "1", "-l", "1", "-singlefile"]
            subprocess.run([pdftoppm, "-png", "-r", str(dpi), *pages, str(pdf), str(work / slug)], check=True)
            target = folder / f"sheet-{slug}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as temporary:
                temporary.write_bytes((work / f"{slug}.png").read_bytes())
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder to write (default spreadsheets/)")
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead")
    parser.add_argument(
        "--png",
        action="store_true",
        help="also render the manual's pictures (the Walkthrough, each sheet of xor's workbook)",
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out)
        for problem in problems:
            print(problem)
        print("spreadsheets: stale" if problems else "spreadsheets: current")
        return 1 if problems else 0
    for path in build(args.out):
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        print(f"wrote {shown} ({path.stat().st_size:,} bytes)")
    if args.png:
        print(f"wrote {render_walkthrough().relative_to(ROOT)}")
        for picture in render_sheets():
            print(f"wrote {picture.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
