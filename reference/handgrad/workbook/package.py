"""The .xlsx package: openpyxl's frame of the workbook (every sheet an empty frame), the streamed
sheets' rows and the shared string table, written into one zip with fixed dates and attributes
(the same bytes on every platform). The rows themselves are laid out by :mod:`handgrad.workbook.xlsx`.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openpyxl.workbook import Workbook
from openpyxl.xml.functions import tostring

from handgrad.workbook.deflated import write_entry
from handgrad.workbook.xlsx import DOCUMENT_TIME, EMPTY_SHEET_DATA, ZIP_TIME, SharedStrings, SheetData

SHARED_STRINGS_PART = "xl/sharedStrings.xml"
_SHARED_STRINGS_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
_SHARED_STRINGS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"


def zip_info(name: str, size: int = 0) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # the same bytes on every platform
    info.external_attr = 0o644 << 16
    info.file_size = size  # lets zipfile choose zip64 up front for a huge sheet
    return info


def _entry_order(names: list[str]) -> list[str]:
    first = [name for name in ("[Content_Types].xml", "_rels/.rels") if name in names]
    return first + [name for name in names if name not in first]


def _add_shared_strings(name: str, content: bytes) -> bytes:
    """Register ``xl/sharedStrings.xml`` in the content types and the workbook's relationships
    (openpyxl 3.1 writes inline strings only, so it lists no such part)."""
    if name == "[Content_Types].xml":
        entry = f'<Override PartName="/{SHARED_STRINGS_PART}" ContentType="{_SHARED_STRINGS_TYPE}" />'
        return content.replace(b"</Types>", entry.encode() + b"</Types>")
    if name == "xl/_rels/workbook.xml.rels":
        target = f"/{SHARED_STRINGS_PART}"
        entry = f'<Relationship Id="rIdSharedStrings" Type="{_SHARED_STRINGS_REL}" Target="{target}" />'
        return content.replace(b"</Relationships>", entry.encode() + b"</Relationships>")
    return content


def save(
    workbook: Workbook,
    path: str | Path,
    sheet_data: Mapping[Any, SheetData],
    strings: SharedStrings | None = None,
) -> None:
    """Write ``workbook`` to ``path`` with each sheet's rows taken from ``sheet_data`` (by sheet)
    and the text of shared-string cells from ``strings``.

    ``path`` should be a temporary file (see :func:`handgrad.atomic.atomic_path`): the zip is
    written in place.
    """
    workbook.properties.creator = "handgrad"
    workbook.properties.created = DOCUMENT_TIME
    frame = io.BytesIO()
    workbook.save(frame)  # every sheet is an empty frame here: small
    workbook.properties.modified = DOCUMENT_TIME  # openpyxl stamps "now" while saving; undo it
    core = tostring(workbook.properties.to_tree())
    by_path = {sheet.path[1:]: data for sheet, data in sheet_data.items()}
    with zipfile.ZipFile(frame) as source, zipfile.ZipFile(path, "w", allowZip64=True) as target:
        names = _entry_order(source.namelist())
        if strings is not None and SHARED_STRINGS_PART in names:
            raise RuntimeError("openpyxl wrote a shared string table of its own")
        for name in names:
            content = core if name == "docProps/core.xml" else source.read(name)
            if strings is not None:
                content = _add_shared_strings(name, content)
            data = by_path.get(name)
            if data is None:
                target.writestr(zip_info(name, len(content)), content)
                if name == "xl/workbook.xml" and strings is not None:
                    table = strings.xml()
                    target.writestr(zip_info(SHARED_STRINGS_PART, len(table)), table)
                continue
            match = EMPTY_SHEET_DATA.search(content)
            if match is None:
                raise RuntimeError(f"{name}: openpyxl wrote rows into a streamed sheet's frame")
            stream = data.part(content[: match.start()], content[match.end() :])
            write_entry(target, zip_info(name, stream.size), stream)
