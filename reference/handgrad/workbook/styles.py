"""Cell styles of the workbook: one colour per phase, plus titles, headers, inputs and torch's numbers.

``STYLES`` maps a key to the attributes of a cell style (``font``, ``fill``, ``border``,
``alignment``, ``number_format``). The phase keys equal :data:`handgrad.contract.trace.PHASES`, so a term's
phase picks its colour. A :class:`Grid` names a style by key; :class:`StyleBook` turns (key, number
format) into the workbook's style index once per workbook.
"""

from __future__ import annotations

from typing import Any

from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.workbook import Workbook


def _fill(rgb: str) -> PatternFill:
    return PatternFill(fill_type="solid", start_color=rgb, end_color=rgb)


_THIN = Side(style="thin", color="BFBFBF")
_BOX = Border(left=_THIN, right=_THIN, top=_THIN, bottom=_THIN)

# Fill colours, also listed in the Read me legend (name, RGB).
COLOURS: dict[str, tuple[str, str]] = {
    "input": ("light yellow", "FFF2CC"),
    "forward": ("light blue", "DDEBF7"),
    "loss": ("light orange", "FCE4D6"),
    "backward": ("light red", "F8D7DA"),
    "update": ("light green", "E2EFDA"),
    "state": ("light purple", "E4DFEC"),
    "diagnostic": ("light teal", "DDF3F1"),
    "torch": ("grey", "EDEDED"),
    "delta": ("white", "FFFFFF"),
}

STYLES: dict[str, dict[str, Any]] = {
    "title": {"font": Font(bold=True, size=14)},
    "subtitle": {"font": Font(bold=True, size=12)},
    "header": {
        "font": Font(bold=True),
        "fill": _fill("D9D9D9"),
        "border": Border(bottom=Side(style="thin", color="808080")),
        "alignment": Alignment(horizontal="center", vertical="center", wrap_text=True),
    },
    "label": {"font": Font(bold=True)},
    "note": {"font": Font(italic=True, color="595959")},
    "text": {"alignment": Alignment(vertical="top", wrap_text=True)},
    "input": {"fill": _fill(COLOURS["input"][1]), "border": _BOX},
    "forward": {"fill": _fill(COLOURS["forward"][1]), "border": _BOX},
    "loss": {"fill": _fill(COLOURS["loss"][1]), "border": _BOX},
    "backward": {"fill": _fill(COLOURS["backward"][1]), "border": _BOX},
    "update": {"fill": _fill(COLOURS["update"][1]), "border": _BOX},
    "state": {"fill": _fill(COLOURS["state"][1]), "border": _BOX},
    "diagnostic": {"fill": _fill(COLOURS["diagnostic"][1]), "border": _BOX},
    "torch": {"fill": _fill(COLOURS["torch"][1]), "font": Font(color="404040"), "border": _BOX},
    "delta": {"font": Font(italic=True, color="404040"), "border": _BOX, "number_format": "0.0E+00"},
    "ok": {"fill": _fill("C6EFCE"), "font": Font(bold=True, color="006100")},
    "fail": {"fill": _fill("FFC7CE"), "font": Font(bold=True, color="9C0006")},
    "banner_ok": {"fill": _fill("C6EFCE"), "font": Font(bold=True, size=13, color="006100")},
    "banner_fail": {"fill": _fill("FFC7CE"), "font": Font(bold=True, size=13, color="9C0006")},
}

# Differential styles for conditional formatting (red / green, as Excel's built-in presets).
CF_FAIL = {"fill": _fill("FFC7CE"), "font": Font(color="9C0006")}
CF_OK = {"fill": _fill("C6EFCE"), "font": Font(color="006100")}

SCIENTIFIC = "0.00E+00"
FULL = "0.000000000000000"  # 15 decimals: what a reader compares digit by digit


class StyleBook:
    """The style index (``s="n"``) of each (style key, number format) used in one workbook."""

    def __init__(self, workbook: Workbook) -> None:
        self.workbook = workbook
        self._ids: dict[tuple[str | None, str | None], int] = {(None, None): 0}
        self._sheet: Any = None

    def id(self, key: str | None, number_format: str | None = None) -> int:
        """The index of the cell format, registered in the workbook on first use."""
        found = self._ids.get((key, number_format))
        if found is not None:
            return found
        if key is not None and key not in STYLES:
            raise KeyError(f"unknown style {key!r}; expected one of {', '.join(STYLES)}")
        if self._sheet is None:
            # a cell needs a sheet to reach the workbook's style table; any sheet will do
            self._sheet = self.workbook.worksheets[0]
        cell = WriteOnlyCell(self._sheet)
        attributes = dict(STYLES[key]) if key is not None else {}
        if number_format is not None:
            attributes["number_format"] = number_format
        for name, value in attributes.items():
            setattr(cell, name, value)
        index = cell.style_id if cell.has_style else 0
        self._ids[(key, number_format)] = index
        return index
