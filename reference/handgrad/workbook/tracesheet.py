"""The Trace sheet: every element of every term of every step, one row each, streamed.

Columns: step, phase, layer, term, index, hand, torch, |Δ|, rel, ok. ``rel`` is the harness's
element-wise relative error |Δ| / ((atol/rtol)·s + |torch|) of that element, s the term's largest
|torch| over the recent steps as the harness measured it
(empty where it is infinite: torch's whole term is 0 and |Δ| is not), values below the dtype's
smallest normal flushed to zero first; ``ok`` is rel ≤ rtol, the element-wise rule of
:mod:`handgrad.contract.tolerance` (the normwise rule is judged per term, on the Summary). The rows go
to :class:`SheetData` as each step runs, so a long run holds no more in memory than a short
one. An Excel sheet holds 1,048,576 rows: when one would pass it, the Trace goes on onto
"Trace 2", "Trace 3", ... (each with its own header and table).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from openpyxl.workbook import Workbook
from openpyxl.worksheet.filters import AutoFilter
from openpyxl.worksheet.table import Table, TableColumn, TableStyleInfo

from handgrad.contract.trace import StepTrace
from handgrad.harness import Tolerance
from handgrad.workbook.xlsx import EXCEL_MAX_ROWS, SharedStrings, SheetData, non_finite_text

COLUMNS = ("step", "phase", "layer", "term", "index", "hand", "torch", "|Δ|", "rel", "ok")
WIDTHS = (7, 10, 10, 18, 9, 24, 24, 11, 11, 6)
TITLE = "Trace"
# hand and torch with 17 significant digits (every bit of a double); |Δ| and rel with 6 (what a
# reader compares; ``ok`` is decided on the exact numbers)
DIGITS = (".17g", ".17g", ".6g", ".6g")
# a step of this many rows or more is formatted in a forked child (workbook/forked_rows.py) while
# the run goes on: 4 µs a row, 0.25 s and more, outweighs a fork of a process that holds torch
# (page tables, copy-on-write faults after) and the wait of a next step's rows for the child's;
# pieces of PIECE_ROWS rows flow to the deflate as they come
FORK_ROWS = 60_000
PIECE_ROWS = 8_192


def sheet_title(number: int) -> str:
    return TITLE if number == 1 else f"{TITLE} {number}"


def _index_texts(shape: tuple[int, ...]) -> list[str]:
    """``[1,2]``-style element labels in C order, counted from 1 as every other sheet and the
    manual count; '' for a scalar."""
    if not shape:
        return [""]
    axes = [[str(i) for i in range(1, n + 1)] for n in shape]
    return ["[" + ",".join(index) + "]" for index in itertools.product(*axes)]  # C order, as ndindex


class TraceSheets:
    """Streams Trace rows into as many sheets as Excel's row limit needs.

    ``new_sheet(title)`` creates a worksheet in the workbook (the caller orders sheets at the
    end); ``rows_per_sheet`` is Excel's limit, lowered only by tests.
    """

    def __init__(
        self,
        workbook: Workbook,
        tolerance: Tolerance,
        *,
        strings: SharedStrings,
        rows_per_sheet: int = EXCEL_MAX_ROWS,
        new_sheet: Callable[[str], object] | None = None,
    ) -> None:
        if rows_per_sheet < 2:
            raise ValueError("a Trace sheet needs room for its header and one row")
        self.workbook = workbook
        self.tolerance = tolerance
        self.strings = strings
        self._ok, self._fail = strings.add("ok"), strings.add("FAIL")
        self.rows_per_sheet = rows_per_sheet
        self._new_sheet = new_sheet or (lambda title: workbook.create_sheet(title))
        self.sheets: list[tuple[object, SheetData]] = []
        self.rows = 0  # data rows written, all sheets together
        self._row = 0  # last row written on the current sheet
        self._data: SheetData | None = None
        self._layouts: dict[tuple, tuple[list[str], list[str], list[int]]] = {}
        self._label_ids: dict[tuple[int, ...], list[int]] = {}
        self._start_sheet()

    def _start_sheet(self) -> None:
        title = sheet_title(len(self.sheets) + 1)
        sheet = self._new_sheet(title)
        for col, width in enumerate(WIDTHS, start=1):
            sheet.column_dimensions[_letter(col)].width = width
        sheet.freeze_panes = "A2"
        data = SheetData(sheet)  # rows deflated as they come, behind this frame (widths, pane)
        data.add_row(1, [self.strings.cell("", name) for name in COLUMNS])
        self.sheets.append((sheet, data))
        self._data = data
        self._row = 1

    def _layout(self, hand: StepTrace) -> tuple[list[str], list[str], list[int]]:
        """Per row of a step: a format string with the numbers as fields (fast path: all finite),
        one with their cells as fields (the general path), and the shared-string index of the
        row's element label (-1: a scalar has none). One template per term, repeated for its
        elements; cached, as every step has the same terms in the same order.

        Cells go without ``r`` where they follow the cell before (see :func:`row_cells`); a
        scalar has no index cell, so its hand cell names its column F."""
        key = tuple((term.name, term.phase, term.value.shape) for term in hand)
        found = self._layouts.get(key)
        if found is not None:
            return found
        fast: list[str] = []
        general: list[str] = []
        labels: list[int] = []
        for name, phase, shape in key:
            layer, _, short = name.partition(".")
            head = '<row r="{0}"><c><v>{1}</v></c>' + "".join(
                f'<c t="s"><v>{self.strings.add(value)}</v></c>' for value in (phase, layer, short)
            )
            ids = self._labels(shape)
            if shape:
                head += '<c t="s"><v>{7}</v></c>'
            first = "<c>" if shape else '<c r="F{0}">'
            numbers = first + "</v></c><c>".join(f"<v>{{{k}:{digits}}}" for k, digits in enumerate(DIGITS, 2))
            fast += [head + numbers + '</v></c><c t="s"><v>{6}</v></c></row>'] * len(ids)
            general += [head + "{2}{3}{4}{5}{6}</row>"] * len(ids)
            labels += ids
        found = self._layouts[key] = (fast, general, labels)
        return found

    def _labels(self, shape: tuple[int, ...]) -> list[int]:
        """The shared-string index of each element's label of a term of ``shape`` (-1: scalar)."""
        found = self._label_ids.get(shape)
        if found is None:
            add = self.strings.add
            found = self._label_ids[shape] = [add(text) if text else -1 for text in _index_texts(shape)]
        return found

    def add_step(
        self, step: int, hand: StepTrace, torch: StepTrace, scales: Sequence[float] | None = None
    ) -> None:
        """Write every element of every term of one step.

        ``scales``: each term's s as the harness measured it (``TermCheck.scale``: its largest
        |torch| over the recent steps), so that ok here is the harness's ok; without them, each
        term's largest |torch| at this step."""
        fast, general, labels = self._layout(hand)
        h = np.concatenate(
            [np.asarray(term.value, dtype=np.float64).reshape(-1) for term in hand] or [_EMPTY]
        )
        parts: list[np.ndarray] = []
        sizes: list[int] = []
        for term in hand:
            other = torch[term.name].value if term.name in torch else None
            if other is None or np.shape(other) != term.value.shape:
                parts.append(np.full(term.value.size, np.nan))
            else:
                parts.append(np.asarray(other, dtype=np.float64).reshape(-1))
            sizes.append(term.value.size)
        t = np.concatenate(parts or [_EMPTY])
        tol = self.tolerance
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            magnitude = np.abs(tol.flush(t))
            own = _segment_max(magnitude, sizes)  # each term's largest |torch| at this step
            if scales is not None and len(own):
                own = np.maximum(own, scales)
            scale = np.repeat(own, sizes) if len(own) else _EMPTY
            diff = np.abs(h - t)
            flushed = np.abs(tol.flush(h) - tol.flush(t))
            rel = tol.element_errors(flushed, magnitude, scale)
            ok = np.where(rel <= tol.rtol, self._ok, self._fail)
        n = h.size
        if self._row + n <= self.rows_per_sheet and np.isfinite(rel).all() and np.isfinite(h).all():
            # rel finite implies torch and |Δ| finite too
            first = self._row + 1

            def produce() -> Iterator[str]:
                columns = (fast, range(first, first + n), h.tolist(), t.tolist(), diff.tolist())
                columns += (rel.tolist(), ok.tolist(), labels)
                for start in range(0, n, PIECE_ROWS):
                    piece = (column[start : start + PIECE_ROWS] for column in columns)
                    yield "".join(
                        template.format(r, step, a, b, c, d, o, e)
                        for template, r, a, b, c, d, o, e in zip(*piece, strict=True)
                    )

            data = self._data
            self._row += n
            self.rows += n
            if n >= FORK_ROWS:  # formatted in a forked child while the run goes on
                data.add_rows_forked(self._row, produce, self.strings)  # type: ignore[union-attr]
                return
            for piece in produce():
                data.write(piece)  # type: ignore[union-attr]
            data.last_row = self._row  # type: ignore[union-attr]
            return
        for template, a, b, c, d, o, e in zip(
            general, h.tolist(), t.tolist(), diff.tolist(), rel.tolist(), ok.tolist(), labels, strict=True
        ):
            if self._row >= self.rows_per_sheet:
                self._start_sheet()
            r = self._row + 1
            cells = (
                _number("" if e >= 0 else f"F{r}", a),
                _number("", b),
                _number("", c, DIGITS[2]),
                _number("", d, DIGITS[3]) if d != _INF else "",
                (_OK_CELL if d != _INF else f'<c r="J{r}" t="s"><v>') + f"{o}</v></c>",
            )
            self._data.write(template.format(r, step, *cells, e))  # type: ignore[union-attr]
            self._row = r
            self.rows += 1
            self._data.last_row = r  # type: ignore[union-attr]

    def finish(self) -> list[tuple[object, SheetData]]:
        """Add the Excel table (header filters) over each sheet's rows; return (sheet, rows)."""
        for number, (sheet, data) in enumerate(self.sheets, start=1):
            last = data.last_row
            if last < 2:
                continue  # a table needs a data row
            name = "TraceTable" if number == 1 else f"TraceTable_{number}"
            ref = f"A1:{_letter(len(COLUMNS))}{last}"
            table = Table(displayName=name, ref=ref, autoFilter=AutoFilter(ref=ref))  # the filter buttons
            table.tableColumns = [TableColumn(id=i, name=title) for i, title in enumerate(COLUMNS, start=1)]
            table.tableStyleInfo = TableStyleInfo(name="TableStyleLight9", showRowStripes=True)
            with warnings.catch_warnings():  # openpyxl warns in write-only mode; the columns are set
                warnings.simplefilter("ignore", UserWarning)
                sheet.add_table(table)  # type: ignore[attr-defined]
        return self.sheets

    def close(self) -> None:
        for _, data in self.sheets:
            data.close()


_INF = float("inf")
_OK_CELL = '<c t="s"><v>'
_EMPTY = np.zeros(0)


def _segment_max(values: np.ndarray, sizes: list[int]) -> np.ndarray:
    """The largest of each run of ``sizes`` consecutive ``values`` (0 for an empty run; NaN where
    a run holds one), as ``np.max(run, initial=0.0)`` per run, in one call."""
    if not sizes:
        return _EMPTY
    if min(sizes) == 0:
        offsets = np.cumsum([0, *sizes])
        return np.array(
            [np.max(values[a:b], initial=0.0) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        )
    return np.maximum(np.maximum.reduceat(values, np.cumsum([0, *sizes[:-1]])), 0.0)


def _letter(col: int) -> str:
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[col - 1]


def _number(ref: str, value: float, digits: str = ".17g") -> str:
    """A number cell, or nan/inf as text; ``ref`` "": no ``r`` (it follows the cell before)."""
    r = f' r="{ref}"' if ref else ""
    if value - value == 0:  # finite
        return f"<c{r}><v>{value:{digits}}</v></c>"
    return f'<c{r} t="inlineStr"><is><t>{non_finite_text(value)}</t></is></c>'
