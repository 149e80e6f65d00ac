"""The workbook's texts come from the run: the sheets present, live sheets missing and why, the command."""

from __future__ import annotations

from pathlib import Path

import pytest
from openpyxl import load_workbook

from handgrad import cli

CASES = [
    ("alexnet-mini", ["--steps", "1", "--channels", "16,8"], "too large for a live walkthrough"),
    (
        "multitask",
        ["--steps", "2", "--loss", "huber"],
        "no live spreadsheet formulas for head 1's loss 'huber'",
    ),
    ("xor", ["--steps", "2", "--dtype", "float32"], "a spreadsheet computes in float64"),
]
INTERNAL = ("handgrad.", "_walkthrough", ".py", "Conv2d is")


def _texts(sheet) -> list[str]:
    return [str(value) for row in sheet.iter_rows(values_only=True) for value in row if value is not None]


@pytest.mark.parametrize(
    ("name", "options", "reason"), CASES, ids=[f"{n}{''.join(o[2:])}" for n, o, _ in CASES]
)
def test_missing_live_sheets_are_said_with_the_real_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, options: list[str], reason: str
) -> None:
    path = tmp_path / "run.xlsx"
    cli.main(["compare", name, *options, "--xlsx", str(path)])
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if line.startswith(f"{name}: workbook: No live Walkthrough")]
    assert len(said) == 1 and reason in said[0], out
    assert not any(word in said[0] for word in INTERNAL), said[0]
    book = load_workbook(path, read_only=True)
    assert not any(title.startswith("Walkthrough") for title in book.sheetnames)
    a3 = str(book["Summary"]["A3"].value)
    assert "no live Walkthrough" in a3 and "every step live" not in a3
    summary, readme = _texts(book["Summary"]), _texts(book["Read me"])
    assert any(reason in text for text in summary) and any(reason in text for text in readme)
    regenerate = [text for text in readme if text.startswith("handgrad compare")]
    assert regenerate and regenerate[0].startswith(
        f"handgrad compare {name} {' '.join(options)} --xlsx FILE.xlsx"
    )
    book.close()


@pytest.mark.parametrize(
    ("name", "options"),
    [("xor", ["--steps", "3"]), ("parity", ["--steps", "2"]), ("deep", ["--steps", "1", "--depth", "2"])],
)
def test_summary_and_read_me_list_the_sheets_present(tmp_path: Path, name: str, options: list[str]) -> None:
    path = tmp_path / "run.xlsx"
    assert cli.main(["compare", name, *options, "--quiet", "--xlsx", str(path)]) == 0
    book = load_workbook(path, read_only=True)
    a3 = str(book["Summary"]["A3"].value)
    listed = next(text for text in _texts(book["Read me"]) if text.startswith("Summary; "))
    for title in book.sheetnames:
        if title not in ("Chart data", "Checks"):  # hidden
            assert title in a3 and title in listed, (title, a3)
    if "Training" not in book.sheetnames:
        assert "no Training sheet" in a3
    book.close()
