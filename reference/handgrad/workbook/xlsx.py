"""The xlsx file itself: streamed sheet rows, Excel's limits and a byte-reproducible zip.

openpyxl (write-only workbook) writes the package: workbook, styles, tables, charts, defined
names, conditional formats and every sheet's frame (columns, panes, tail). The rows of each sheet
are not built as openpyxl cells (about 5,000 rows a second): :class:`SheetData` serialises them
straight to XML as they come and deflates them behind the sheet's frame head in a worker thread
(workbook/deflated.py; a big grid's rows are serialised in a forked child, workbook/forked_rows.py),
so memory stays flat however long the Trace is; :func:`handgrad.workbook.package.save` copies
each sheet's deflated part into the final zip, the frame's tail added.

The zip is reproducible: the document's created/modified times are fixed (``docProps/core.xml``),
every entry carries the same date, mode and compression, and the entries come in a fixed order
(``[Content_Types].xml`` first, then openpyxl's order, which depends only on the workbook).
"""

from __future__ import annotations

import datetime
import io
import math
import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import attrgetter, itemgetter
from typing import IO, Any

import numpy as np
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._writer import WorksheetWriter
from openpyxl.worksheet.formula import ArrayFormula

from handgrad.contract.spec import SpecError
from handgrad.workbook import forked_rows
from handgrad.workbook.deflated import DeflatedStream

EXCEL_MAX_ROWS = 1_048_576
EXCEL_MAX_COLS = 16_384
EXCEL_MAX_FORMULA = 8_192
EXCEL_MAX_TEXT = 32_767
EXCEL_MAX_TITLE = 31
DOCUMENT_TIME = datetime.datetime(2000, 1, 1, 0, 0, 0)  # created/modified of every workbook
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry

SHEET_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_BAD_TITLE = re.compile(r"[\[\]:*?/\\]")
_COLUMN_LETTERS = [""] + [get_column_letter(i) for i in range(1, 703)]  # A..ZZ, the common case


class ExcelLimitError(SpecError):
    """The workbook would break one of Excel's limits (rows, columns, formula or text length)."""

    def __init__(self, message: str) -> None:
        super().__init__("workbook", message)


def column_letter(col: int) -> str:
    return _COLUMN_LETTERS[col] if col < len(_COLUMN_LETTERS) else get_column_letter(col)


def check_title(title: str) -> str:
    """A sheet title Excel accepts (≤ 31 characters, none of ``[]:*?/\\``)."""
    if not title or len(title) > EXCEL_MAX_TITLE or _BAD_TITLE.search(title) or title.startswith("'"):
        raise ExcelLimitError(f"sheet title {title!r} is not allowed (1 to 31 characters, no []:*?/\\)")
    return title


def xml_text(text: str) -> str:
    """Escape text for an XML element; characters XML cannot hold become U+FFFD."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _ILLEGAL.sub("\ufffd", text)


def xml_attr(text: str) -> str:
    return xml_text(text).replace('"', "&quot;")


def reference(ref: str) -> str:
    """The ``r`` attribute of a ``<c>`` element; none for ``ref`` "" (see :meth:`SheetData.add_cells`)."""
    return f' r="{ref}"' if ref else ""


def inline_string(ref: str, text: str, style: int = 0) -> str:
    """A text cell (``ref`` "": no ``r``). Always a string, never a formula, whatever it starts with."""
    if len(text) > EXCEL_MAX_TEXT:
        text = text[: EXCEL_MAX_TEXT - 1] + "…"
    s = f' s="{style}"' if style else ""
    space = ' xml:space="preserve"' if text != text.strip() or "\n" in text else ""
    return f'<c{reference(ref)}{s} t="inlineStr"><is><t{space}>{xml_text(text)}</t></is></c>'


def number_text(value: float) -> str | None:
    """``repr`` of a finite float (reads back to the same double); None when not finite."""
    return repr(value) if math.isfinite(value) else None


def non_finite_text(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def formula_body(text: str) -> str:
    body = text[1:] if text.startswith("=") else text
    if len(body) + 1 > EXCEL_MAX_FORMULA:
        raise ExcelLimitError(
            f"a formula of {len(body) + 1:,} characters exceeds Excel's {EXCEL_MAX_FORMULA:,} "
            f"(begins {body[:60]!r})"
        )
    return body


class SharedStrings:
    """The workbook's shared string table (``xl/sharedStrings.xml``): each text stored once.

    A cell then holds the text's index: the Trace repeats a handful of texts (phases, terms, ok)
    hundreds of thousands of times, and a spreadsheet reads an index far faster than the text.
    """

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.index)

    def add(self, text: str) -> int:
        found = self.index.get(text)
        if found is None:
            found = self.index[text] = len(self.index)
        return found

    def cell(self, ref: str, text: str, style: int = 0) -> str:
        """A text cell through the table (``ref`` "": no ``r``). Always a string, never a formula."""
        if len(text) > EXCEL_MAX_TEXT:
            text = text[: EXCEL_MAX_TEXT - 1] + "…"
        s = f' s="{style}"' if style else ""
        return f'<c{reference(ref)}{s} t="s"><v>{self.add(text)}</v></c>'

    def xml(self) -> bytes:
        parts = [
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n',
            f'<sst xmlns="{SHEET_NS}" uniqueCount="{len(self.index)}">',
        ]
        for text in self.index:
            space = ' xml:space="preserve"' if text != text.strip() or "\n" in text else ""
            parts.append(f"<si><t{space}>{xml_text(text)}</t></si>")
        parts.append("</sst>")
        return "".join(parts).encode("utf-8")


def cell_xml(
    ref: str,
    value: object,
    style: int = 0,
    *,
    is_text: bool = False,
    strings: SharedStrings | None = None,
    cached: float | None = None,
) -> str:
    """The ``<c>`` element of one cell; ``ref`` "" writes it without ``r`` (the next column).

    A ``str`` that starts with ``=`` is a formula unless ``is_text`` (text from a user is always
    written as text); an ``ArrayFormula`` is an array formula over its ``ref``; numbers are written
    with ``repr`` (every bit kept); a non-finite number becomes the text ``nan``/``inf``. Text goes
    through ``strings`` when given, else inline. ``cached``: a formula's value, stored as its
    ``<v>`` so that a reader that does not recompute (a preview, openpyxl ``data_only``, pandas)
    shows the number; on a cell inside an array formula's range (``value`` None), that element.
    An empty cell without style or value is no element at all ("").
    """
    r = f' r="{ref}"' if ref else ""
    s = f' s="{style}"' if style else ""
    v = f"<v>{float(cached)!r}</v>" if cached is not None and math.isfinite(cached) else ""
    if value is None:
        if v:
            return f"<c{r}{s}>{v}</c>"
        return f"<c{r}{s}/>" if style else ""
    if isinstance(value, ArrayFormula):
        body = xml_text(formula_body(value.text or ""))
        return f'<c{r}{s}><f t="array" ref="{xml_attr(value.ref)}">{body}</f>{v}</c>'
    if isinstance(value, (bool, np.bool_)):
        return f'<c{r}{s} t="b"><v>{int(bool(value))}</v></c>'
    if isinstance(value, (int, np.integer)):
        return f"<c{r}{s}><v>{int(value)}</v></c>"
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isfinite(number):
            return f"<c{r}{s}><v>{number!r}</v></c>"
        text = non_finite_text(number)
    elif isinstance(value, str):
        if value.startswith("=") and not is_text and len(value) > 1:
            return f"<c{r}{s}><f>{xml_text(formula_body(value))}</f>{v}</c>"
        text = value
    else:
        raise TypeError(f"cannot write a {type(value).__name__} into cell {ref}")
    return strings.cell(ref, text, style) if strings is not None else inline_string(ref, text, style)


RowCell = tuple[int, object, int, bool, "float | None"]  # (column, value, style, is_text, cached)
_XML_SPECIAL = re.compile("[&<>\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def row_cells(row: int, cells: list[RowCell], strings: SharedStrings | None = None) -> list[str]:
    """The ``<c>`` elements of one row from its cells, in increasing column order.

    A cell that is the next column after the cell written before it (the first: column A) is
    written without ``r``: the reference is optional in SpreadsheetML, and Excel, LibreOffice and
    openpyxl all place such a cell one column to the right of the one before. Every cell after a
    gap keeps ``r``. This halves the Trace's compressed size.
    """
    items = [(col, _Cell(value, style, is_text, cached)) for col, value, style, is_text, cached in cells]
    return grid_row(row, items, _StyleAttributes(), strings)


class _Cell:
    """What :func:`grid_row` reads of a cell (as :class:`handgrad.workbook.grid.Cell`)."""

    __slots__ = ("value", "style", "number_format", "is_text", "cached")

    def __init__(self, value: object, style: int, is_text: bool, cached: float | None) -> None:
        self.value, self.style, self.number_format = value, style, None
        self.is_text, self.cached = is_text, cached


class _StyleAttributes(dict):  # type: ignore[type-arg]
    """``style index -> ' s="index"'`` ("" for 0), made on first use."""

    def __missing__(self, style: int) -> str:
        found = self[style] = f' s="{style}"' if style else ""
        return found


def grid_row(
    row: int,
    items: list[tuple[int, Any]],
    attributes: Mapping[Any, str],
    strings: SharedStrings | None = None,
) -> list[str]:
    """The ``<c>`` elements of one row: ``items`` are (column, cell) in increasing column order, a
    cell has ``value``, ``style``, ``number_format``, ``is_text`` and ``cached`` (see
    :func:`cell_xml`); ``attributes`` maps a cell's ``style`` (``(style, number_format)`` where it
    has a number format) to its ``s`` attribute. A cell that follows the one written before it
    goes without ``r`` (see :func:`row_cells`). The commonest cells (a finite number, a formula,
    an array formula's element) are written here without a call per cell; the rest by
    :func:`cell_xml`.
    """
    if items and items[-1][0] > EXCEL_MAX_COLS:
        raise ExcelLimitError(f"column {items[-1][0]:,} is past Excel's last column ({EXCEL_MAX_COLS:,})")
    out: list[str] = []
    append = out.append
    previous = 0
    special = _XML_SPECIAL.search
    letters = _COLUMN_LETTERS
    add_text = strings.add if strings is not None else None
    for col, cell in items:
        r = "" if col == previous + 1 else f' r="{letters[col] if col < 703 else column_letter(col)}{row}"'
        number_format = cell.number_format
        s = attributes[cell.style] if number_format is None else attributes[(cell.style, number_format)]
        value = cell.value
        kind = type(value)
        if kind is str:
            if cell.is_text or value[:1] != "=" or len(value) < 2:  # type: ignore[index]
                if add_text is not None and len(value) <= EXCEL_MAX_TEXT:  # type: ignore[arg-type]
                    append(f'<c{r}{s} t="s"><v>{add_text(value)}</v></c>')  # type: ignore[arg-type]
                    previous = col
                    continue
            else:
                if len(value) > EXCEL_MAX_FORMULA:  # type: ignore[arg-type]
                    formula_body(value)  # type: ignore[arg-type]  # raises
                cached = cell.cached
                body = value[1:]  # type: ignore[index]
                if special(body):
                    body = xml_text(body)
                if type(cached) is float and cached - cached == 0:
                    append(f"<c{r}{s}><f>{body}</f><v>{cached!r}</v></c>")
                    previous = col
                    continue
                if cached is None:
                    append(f"<c{r}{s}><f>{body}</f></c>")
                    previous = col
                    continue
        elif kind is float:
            if value - value == 0:  # finite
                append(f"<c{r}{s}><v>{value!r}</v></c>")
                previous = col
                continue
        elif value is None:
            cached = cell.cached
            if type(cached) is float and cached - cached == 0:  # in an array formula's range
                append(f"<c{r}{s}><v>{cached!r}</v></c>")
                previous = col
                continue
        elif kind is int:
            append(f"<c{r}{s}><v>{value}</v></c>")
            previous = col
            continue
        style = int(s[4:-1]) if s else 0
        xml = cell_xml(r[4:-1], value, style, is_text=cell.is_text, strings=strings, cached=cell.cached)
        if xml:  # an empty cell is no element: the next one must then name its column
            append(xml)
            previous = col
    return out


class SheetData:
    """The ``<row>`` elements of one sheet, streamed out of memory as they come.

    Rows must come in increasing order. Nothing is held in memory beyond a small buffer. Given
    the ``sheet`` (an openpyxl write-only worksheet whose frame is set: column widths, panes),
    the rows are deflated as they come, behind the sheet's frame head as it stands at the first
    flush (:class:`~handgrad.workbook.deflated.DeflatedStream`); :meth:`part` checks that head
    against the saved frame's and deflates the rows again behind the real one where they differ.
    Else they go to an unnamed temporary file, deflated when saved. Either file disappears when
    closed (or when the process dies: it has no name on disk).
    """

    FLUSH = 1 << 20

    def __init__(self, sheet: Any = None) -> None:
        self.sheet = sheet
        self.file: IO[bytes] | None = None  # the rows, not deflated yet
        self.stream: DeflatedStream | None = None  # the frame's head and the rows, deflated
        self._pending: list[str] = []
        self._pending_size = 0
        self._size = 0  # bytes of rows flushed
        self.last_row = 0
        self.max_col = 0
        self._forked: tuple[forked_rows.ForkedRows, Callable[[], None]] | None = None
        self._before_fork = (0, 0)

    def write(self, xml: str) -> None:
        """Append raw row XML (the caller keeps rows in order and counts them in ``last_row``)."""
        if self._forked is not None:
            self._settle()
        self._pending.append(xml)
        self._pending_size += len(xml)
        if self._pending_size > self.FLUSH:
            self.flush()

    def add_row(self, row: int, cells: Iterable[str], height: float | None = None) -> None:
        if row <= self.last_row:
            raise ValueError(f"row {row} written after row {self.last_row}")
        if row > EXCEL_MAX_ROWS:
            raise ExcelLimitError(f"row {row:,} is past Excel's last row ({EXCEL_MAX_ROWS:,})")
        self.write(row_xml(row, cells, height))
        self.last_row = row

    def add_cells(
        self,
        row: int,
        values: Mapping[int, tuple[object, int, bool] | tuple[object, int, bool, float | None]],
        strings: SharedStrings | None = None,
    ) -> None:
        """One row from ``{col: (value, style, is_text[, cached])}``."""
        cells = [(col, *values[col], None)[:5] for col in sorted(values)]
        if cells and cells[0][0] < 1:
            raise ValueError(f"row {row}: column {cells[0][0]} (columns count from 1)")
        self.add_row(row, row_cells(row, cells, strings))  # type: ignore[arg-type]
        self.max_col = max(self.max_col, max(values, default=0))

    def add_grid(
        self,
        cells: Mapping[tuple[int, int], Any],
        style_id: Callable[[str | None, str | None], int],
        strings: SharedStrings | None = None,
    ) -> None:
        """Every cell of a grid, ``{(row, col): cell}`` (a :class:`handgrad.workbook.grid.Cell`:
        value, style, number_format, is_text, cached), in rows; ``style_id`` maps a cell's style
        and number format to its index in the workbook (asked in the order the cells were set).
        The grid must not change after (a big one is serialised in a forked child)."""
        attributes: dict[Any, str] = {}
        for key in dict.fromkeys(map(_STYLE_KEY, cells.values())):
            style = style_id(*key) if key[0] or key[1] else 0
            attributes[key[0] if key[1] is None else key] = f' s="{style}"' if style else ""
        if self._fork(cells, attributes, strings):
            return
        self._add_rows(grid_rows(cells), attributes, strings)

    def _add_rows(
        self,
        rows: list[tuple[int, list[tuple[int, Any]]]],
        attributes: Mapping[Any, str],
        strings: SharedStrings | None,
    ) -> None:
        for row, items in rows:
            self.add_row(row, grid_row(row, items, attributes, strings))
            self.max_col = max(self.max_col, items[-1][0])

    def _fork(
        self,
        cells: Mapping[tuple[int, int], Any],
        attributes: Mapping[Any, str],
        strings: SharedStrings | None,
    ) -> bool:
        """Group and serialise a grid's rows in a forked child (:mod:`handgrad.workbook.forked_rows`)
        where that pays and nothing can go wrong in it that the parent would have to see; True if
        it does. The parent registers the rows' texts first, in the order the rows meet them."""
        if not (forked_rows.ENABLED and forked_rows.MIN_CELLS <= len(cells) and self.sheet is not None):
            return False
        if forked_rows.busy():  # another child holds the second CPU: serialise here meanwhile
            return False
        first_row, last_row = min(cells)[0], max(cells)[0]
        last_col = max(map(itemgetter(1), cells))
        if first_row <= self.last_row or last_row > EXCEL_MAX_ROWS or last_col > EXCEL_MAX_COLS:
            return False  # add_row refuses it: in the parent, now
        if not self._stream_ready():
            return False
        if strings is not None:
            for text in forked_rows.texts(cells, EXCEL_MAX_TEXT):
                strings.add(text)

        def produce() -> Iterator[bytes]:
            pieces: list[str] = []
            size = 0
            for row, items in grid_rows(cells):
                xml = row_xml(row, grid_row(row, items, attributes, strings))
                pieces.append(xml)
                size += len(xml)
                if size > self.FLUSH:
                    yield "".join(pieces).encode("utf-8")
                    pieces.clear()
                    size = 0
            yield "".join(pieces).encode("utf-8")

        def fallback() -> None:  # the same rows, serialised here
            self._add_rows(grid_rows(cells), attributes, strings)

        return self._start_child(produce, fallback, strings, last_row, max(self.max_col, last_col))

    def add_rows_forked(
        self, last_row: int, produce: Callable[[], Iterable[str]], strings: SharedStrings | None = None
    ) -> None:
        """Rows after :attr:`last_row` up to ``last_row`` whose XML ``produce()`` yields in pieces
        (every text they name already in ``strings``): made in a forked child where that can be
        (:mod:`handgrad.workbook.forked_rows`), so the caller goes on meanwhile, else here."""
        if last_row > EXCEL_MAX_ROWS:
            raise ExcelLimitError(f"row {last_row:,} is past Excel's last row ({EXCEL_MAX_ROWS:,})")

        def here() -> None:
            for piece in produce():
                self.write(piece)

        def encoded() -> Iterator[bytes]:
            for piece in produce():
                yield piece.encode("utf-8")

        started = (
            forked_rows.ENABLED
            and self.sheet is not None
            and self._stream_ready()
            and self._start_child(encoded, here, strings, last_row, self.max_col)
        )
        if not started:
            here()
            self.last_row = last_row

    def _stream_ready(self) -> bool:
        """Settle any child, flush, and open the deflate stream behind the frame's head; False
        where the rows cannot be streamed (the frame has no empty sheetData)."""
        self._settle()
        self.flush()
        if self.stream is None:
            head = _stream_head(self.sheet) if self.file is None else None
            if head is None:
                return False
            self.stream = DeflatedStream(head)
        return True

    def _start_child(
        self,
        produce: Callable[[], Iterable[bytes]],
        fallback: Callable[[], None],
        strings: SharedStrings | None,
        last_row: int,
        last_col: int,
    ) -> bool:
        try:
            child = forked_rows.ForkedRows(produce, strings if strings is not None else (), self.stream)
        except OSError:  # no process to spare: the texts registered are the ones the rows add here
            return False
        self._forked = (child, fallback)
        self._before_fork = (self.last_row, self.max_col)
        self.last_row, self.max_col = last_row, last_col
        return True

    def _settle(self) -> None:
        """Wait for rows serialised in a child; serialise them here if the child failed."""
        if self._forked is None:
            return
        forked, fallback = self._forked
        self._forked = None
        if forked.join():
            self._size += forked.size
            return
        last = self.last_row
        self.last_row, self.max_col = self._before_fork
        fallback()
        self.last_row = max(self.last_row, last)

    def flush(self) -> None:
        if not self._pending:
            return
        data = "".join(self._pending).encode("utf-8")
        self._pending.clear()
        self._pending_size = 0
        self._size += len(data)
        if self.stream is None and self.file is None:
            head = _stream_head(self.sheet) if self.sheet is not None else None
            if head is not None:
                self.stream = DeflatedStream(head)
            else:
                self.file = tempfile.TemporaryFile(prefix="handgrad-sheet-")
        if self.stream is not None:
            self.stream.add(data)
        else:
            self.file.write(data)  # type: ignore[union-attr]

    def size(self) -> int:
        """Bytes of the rows written so far."""
        self._settle()
        self.flush()
        return self._size

    def part(self, head: bytes, tail: bytes) -> DeflatedStream:
        """The sheet's whole part, deflated: the frame's ``head``, ``<sheetData>``, the rows,
        ``</sheetData>`` and the frame's ``tail``. No row can be added after."""
        self._settle()
        self.flush()
        prefix = head + b"<sheetData>"
        stream = self.stream
        if stream is None or stream.head != prefix:
            fresh = DeflatedStream(prefix)
            if stream is not None:  # the frame changed after the first rows were deflated
                stream.finish()
                for data in stream.inflated(skip=len(stream.head)):
                    fresh.add(data)
                stream.close()
            elif self.file is not None:
                self.file.seek(0)
                while data := self.file.read(1 << 20):
                    fresh.add(data)
                self.file.close()
                self.file = None
            stream = self.stream = fresh
        stream.add(b"</sheetData>" + tail)
        stream.finish()
        return stream

    def close(self) -> None:
        if self._forked is not None:
            self._forked[0].cancel()
            self._forked = None
        if self.stream is not None:
            self.stream.close()
        if self.file is not None:
            self.file.close()


_STYLE_KEY = attrgetter("style", "number_format")


def grid_rows(cells: Mapping[tuple[int, int], Any]) -> list[tuple[int, list[tuple[int, Any]]]]:
    """A grid's cells as rows: ``[(row, [(col, cell), ...] by column), ...]`` by row."""
    grouped: defaultdict[int, list[tuple[int, Any]]] = defaultdict(list)
    for (row, col), cell in cells.items():
        grouped[row].append((col, cell))
    first = itemgetter(0)
    rows = [(row, grouped[row]) for row in sorted(grouped)]
    for _, items in rows:
        items.sort(key=first)
    return rows


def row_xml(row: int, cells: Iterable[str], height: float | None = None) -> str:
    """A ``<row>`` element around its cells' elements."""
    extra = f' ht="{height}" customHeight="1"' if height else ""
    return f'<row r="{row}"{extra}>{"".join(cells)}</row>'


def _stream_head(sheet: Any) -> bytes | None:
    """What a sheet's deflated part starts with: its frame's head as it stands, ``<sheetData>``."""
    head = frame_head(sheet)
    return None if head is None else head + b"<sheetData>"


def frame_head(sheet: Any) -> bytes | None:
    """What openpyxl writes before the rows of write-only ``sheet`` as the sheet stands now
    (properties, views, format, columns), or None where its frame has no empty sheetData."""
    # writing the frame sets these on the sheet (the columns' outline level is found while the
    # columns are written, after the format that names it): put them back, or the real frame
    # would name an outline level this one did not
    kept = (sheet.column_dimensions.max_outline, sheet.sheet_format.outlineLevelCol)
    lists = {name: getattr(sheet, name) for name in ("_hyperlinks", "_comments") if hasattr(sheet, name)}
    out = io.BytesIO()
    try:
        writer = WorksheetWriter(sheet, out=out)
        writer.write_top()
        writer.write_rows()
        writer.close()
    finally:
        sheet.column_dimensions.max_outline, sheet.sheet_format.outlineLevelCol = kept
        for name in ("_hyperlinks", "_comments"):
            if name in lists:
                setattr(sheet, name, lists[name])
            elif hasattr(sheet, name):
                delattr(sheet, name)
    content = out.getvalue()
    match = EMPTY_SHEET_DATA.search(content)
    return None if match is None else content[: match.start()]


EMPTY_SHEET_DATA = re.compile(rb"<sheetData\s*/>|<sheetData>\s*</sheetData>")
