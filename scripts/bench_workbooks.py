"""bench.py's rows for the workbook at every scenario's defaults (issue 15, "Done when", item 1).

Every scenario of ``handgrad list`` runs at its defaults twice over, interleaved ``--repeats``
times: ``handgrad compare NAME --quiet`` and the same with ``--xlsx FILE``. Three rows read the
figures of those runs (measured once, whichever row asks first):

- ``wb_size``: the largest default workbook, MB (target ≤ 10);
- ``wb_write``: the largest ``--xlsx`` run / plain run, wall seconds, fastest of each (target ≤ 2);
- ``wb_open``: the slowest open-and-recompute of a default workbook in headless LibreOffice,
  seconds (target ≤ 5).

Opening is timed as a reader meets it: a LibreOffice whose profile exists already (a private
profile, set to recompute every formula on load as scripts/recalc.py sets it, started once
before the timing so that the first start's profile creation is not counted), one process per
workbook, start-up included, converting the workbook to CSV. The conversion loads every sheet and
recomputes every formula (the profile's "always recalculate"), then writes only the first sheet as
text: the cheapest headless way to open a document. recalc.py's own "recomputed in X s" is not this
figure: it also writes the whole recomputed workbook back as .xlsx, which takes longer than opening
it (deep's 8 MB: 3.8 s to open and recompute, 10.8 s with the write-back).
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import OPTIONS, Row, benchmark, time_commands  # noqa: E402 (scripts/ is on the path)

MB = 1e6  # the 10 MB, in bytes


@dataclass
class Defaults:
    """Each scenario's figures at its defaults."""

    bytes: dict[str, int] = field(default_factory=dict)
    plain: dict[str, float] = field(default_factory=dict)
    xlsx: dict[str, float] = field(default_factory=dict)
    open: dict[str, float] = field(default_factory=dict)


def listed_scenarios() -> list[str]:
    """The scenarios ``handgrad list`` prints (its first column)."""
    listing = subprocess.run(
        [sys.executable, "-m", "handgrad", "list"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def open_as_csv(soffice: str, profile: str, path: Path, out: Path) -> Path:
    """Open ``path`` in headless LibreOffice with ``profile`` and write its first sheet as CSV into
    ``out``; the CSV's path. With recalc.py's profile every formula is recomputed on load, so the
    CSV holds recomputed values, not the file's cached ones (tests/test_bench_workbooks.py)."""
    command = [
        soffice, "--headless", "--norestore", "--nologo",
        f"-env:UserInstallation={profile}", "--convert-to", "csv", "--outdir", str(out), str(path),
    ]  # fmt: skip
    subprocess.run(command, capture_output=True, check=True, timeout=600)
    written = out / f"{path.stem}.csv"
    if not written.is_file():  # LibreOffice exits 0 when a conversion fails
        raise RuntimeError(f"LibreOffice did not open {path.name}")
    return written


def open_seconds(paths: list[Path], repeats: int) -> dict[Path, float]:
    """Seconds headless LibreOffice takes to open and recompute each workbook (fastest of
    ``repeats``), with a warm private profile set to always recalculate."""
    import recalc  # scripts/recalc.py

    soffice = recalc.find_soffice()
    if soffice is None:
        raise RuntimeError("LibreOffice (soffice) is not installed")
    best = dict.fromkeys(paths, math.inf)
    with tempfile.TemporaryDirectory(prefix="handgrad-open-") as folder:
        profile = recalc.make_profile(Path(folder) / "profile")
        out = Path(folder) / "out"
        open_as_csv(soffice, profile, paths[0], out).unlink()  # the profile's first start, not timed
        for _ in range(repeats):
            for path in paths:
                start = time.perf_counter()
                written = open_as_csv(soffice, profile, path, out)
                best[path] = min(best[path], time.perf_counter() - start)
                written.unlink()
    return best


@functools.cache
def measure_defaults() -> Defaults:
    figures = Defaults()
    with tempfile.TemporaryDirectory(prefix="handgrad-defaults-") as folder:
        paths = {}
        for name in listed_scenarios():
            path = paths[name] = Path(folder) / f"{name}.xlsx"
            base = [sys.executable, "-m", "handgrad", "compare", name, "--quiet"]
            seconds = time_commands(
                {"plain": base, "xlsx": [*base, "--xlsx", str(path)]}, repeats=OPTIONS.repeats
            )
            figures.plain[name], figures.xlsx[name] = seconds["plain"], seconds["xlsx"]
            figures.bytes[name] = path.stat().st_size
        opened = open_seconds(list(paths.values()), OPTIONS.repeats)
        figures.open = {name: opened[path] for name, path in paths.items()}
    return figures


def _listing(values: dict[str, float], unit: str) -> str:
    return " ".join(f"{name} {value:.2f}{unit}" for name, value in values.items())


@benchmark("wb_size", "largest default workbook of `handgrad compare NAME --xlsx F`, MB (target ≤ 10)")
def workbook_size() -> Row:
    sizes = {name: size / MB for name, size in measure_defaults().bytes.items()}
    return Row("wb_size", _listing(sizes, ""), max(sizes.values()), 10.0)


@benchmark("wb_write", "largest `compare NAME --xlsx F` / `compare NAME` at defaults, wall (target ≤ 2)")
def workbook_write() -> Row:
    figures = measure_defaults()
    ratios = {name: figures.xlsx[name] / figures.plain[name] for name in figures.plain}
    return Row("wb_write", _listing(ratios, "×"), max(ratios.values()), 2.0)


@benchmark("wb_open", "slowest default workbook opened and recomputed by LibreOffice, s (target ≤ 5)")
def workbook_open() -> Row:
    seconds = measure_defaults().open
    return Row("wb_open", _listing(seconds, " s"), max(seconds.values()), 5.0)
