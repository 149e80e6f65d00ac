"""Loading a user's initial weights (JSON or ``.npz``) and data (CSV), refusing bad files by field.

Nothing here executes or unpickles what it reads: JSON is parsed as data and ``.npz`` is opened
with ``allow_pickle=False``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from handgrad.contract.spec import Data, SpecError

MAX_VALUES = 10_000_000  # a weights or data file with more numbers than this is refused
MAX_TEXT_BYTES = 256 * 2**20  # a JSON or CSV file is read up to this many bytes, then refused
MAX_NUMBER_CHARS = 64  # a number written with more characters than this is refused
MAX_CSV_FIELD = 4096  # characters in one CSV cell
# a decimal literal as written: no '_', no spaces inside, no hex, no nan/inf words
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_number(field: str, text: str) -> float:
    """A decimal literal (``1``, ``-0.5``, ``2e-3``) as a finite float, or SpecError naming ``field``.

    Stricter than ``float()``: ``1_0``, ``0x10``, ``1\n0`` inside a quoted cell, ``nan`` and
    ``inf`` are refused, so a value is never misread without a word."""
    cell = text.strip()
    if len(cell) > MAX_NUMBER_CHARS:
        raise SpecError(field, f"expected a number, got {len(cell)} characters")
    if not DECIMAL.fullmatch(cell):
        raise SpecError(field, f"expected a decimal number, got {text.strip()!r}")
    number = float(cell)
    if not math.isfinite(number):
        raise SpecError(field, f"expected a finite number, got {cell} (out of float64's range)")
    return number


def _readable_file(field: str, path: str | os.PathLike[str]) -> Path:
    if not str(path).strip():
        raise SpecError(field, "expected a file path, got an empty value")
    file = Path(path)
    if file.is_dir():
        raise SpecError(field, f"expected a file, got a directory: {file}")
    if not file.exists():
        raise SpecError(field, f"no such file: {file}")
    return file


def _read_text(field: str, file: Path) -> str:
    try:
        with open(file, "rb") as handle:  # bounded: a stream that never ends (/dev/zero) is refused
            data = handle.read(MAX_TEXT_BYTES + 1)
        if len(data) > MAX_TEXT_BYTES:
            raise SpecError(field, f"{file} is larger than {MAX_TEXT_BYTES // 2**20} MiB")
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SpecError(field, f"{file} is not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise SpecError(field, f"cannot read {file}: {error.strerror}") from None
    if not text.strip():
        raise SpecError(field, f"{file} is empty")
    return text


def _to_array(field: str, value: object) -> np.ndarray:
    def check(item: object, where: str) -> None:
        if isinstance(item, list):
            for i, inner in enumerate(item):
                check(inner, f"{where}[{i}]")
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            raise SpecError(where, f"expected a number, got {item!r}")
        elif not math.isfinite(item):
            raise SpecError(where, f"expected a finite number, got {item}")

    check(value, field)
    try:
        array = np.array(value, dtype=np.float64)
    except ValueError:
        raise SpecError(field, "expected a rectangular array of numbers (rows of equal length)") from None
    return array


def load_weights(
    path: str | os.PathLike[str], expected: Sequence[tuple[str, tuple[int, ...]]]
) -> dict[str, np.ndarray]:
    """Initial parameters keyed by the hand side's names (``dense1.W``), checked against shapes.

    JSON: an object ``{"dense1.W": [[...], ...], "dense1.b": [...], ...}``; or ``.npz`` with the
    same keys. Every expected key must be present, no other key may be, every shape must match.
    """
    file = _readable_file("weights", path)
    raw: dict[str, object]
    if file.suffix.lower() == ".npz":
        _check_npz(file)
        try:
            with np.load(file, allow_pickle=False) as archive:
                raw = {key: archive[key] for key in archive.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
            raise SpecError("weights", f"{file} is not a readable .npz archive ({error})") from None
        values = {}
        for key, array in raw.items():
            array = np.asarray(array)
            if array.dtype.kind not in "iuf":
                raise SpecError(f"weights.{key}", f"expected numbers, got dtype {array.dtype}")
            values[key] = array.astype(np.float64)
    else:
        text = _read_text("weights", file)
        try:
            raw = json.loads(
                text,
                object_pairs_hook=_unique_keys,
                parse_int=lambda literal: parse_number("weights", literal),
                parse_float=lambda literal: parse_number("weights", literal),
            )  # NaN and Infinity parse, and are refused below naming the parameter
        except json.JSONDecodeError as error:
            raise SpecError(
                "weights", f"{file} is not valid JSON (line {error.lineno}: {error.msg})"
            ) from None
        except RecursionError:
            raise SpecError("weights", f"{file} is nested too deeply for arrays of numbers") from None
        if not isinstance(raw, dict):
            raise SpecError("weights", "expected a JSON object keyed by parameter name")
        values = {key: _to_array(f"weights.{key}", value) for key, value in raw.items()}
    names = [name for name, _ in expected]
    for name in names:
        if name not in values:
            raise SpecError(f"weights.{name}", f"missing (expected keys: {', '.join(names)})")
    for key in values:
        if key not in names:
            raise SpecError(f"weights.{key}", f"unexpected key (expected keys: {', '.join(names)})")
    total = 0
    for name, shape in expected:
        array = values[name]
        if array.shape != tuple(shape):
            raise SpecError(f"weights.{name}", f"expected shape {tuple(shape)}, got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise SpecError(f"weights.{name}", "expected finite numbers, found NaN or inf")
        total += array.size
    if total > MAX_VALUES:
        raise SpecError("weights", f"too many values ({total} > {MAX_VALUES})")
    return {name: values[name] for name in names}


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise SpecError(f"weights.{key}", "appears twice in the JSON object")
        result[key] = value
    return result


def _check_npz(file: Path) -> None:
    """Read each member's declared size, shape and dtype from the archive before any array: a
    zip bomb or a header declaring a 10⁷×10⁷ array is refused without decompressing it."""
    try:
        with zipfile.ZipFile(file) as archive:
            total = 0
            for info in archive.infolist():
                if info.file_size > 8 * MAX_VALUES + 4096:
                    size = f"{info.file_size:,} bytes"
                    raise SpecError("weights", f"{file}: member {info.filename} declares {size}")
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    reader = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = reader(member)
                if dtype.hasobject:
                    raise SpecError("weights", f"{file}: member {info.filename} holds Python objects")
                total += math.prod(shape)
                if total > MAX_VALUES:
                    raise SpecError("weights", f"{file}: more than {MAX_VALUES:,} values declared")
    except SpecError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise SpecError("weights", f"{file} is not a readable .npz archive ({error})") from None


def load_csv(path: str | os.PathLike[str], targets: Sequence[str] | int) -> Data:
    """Rows of numbers under a header row; ``targets`` names the target columns, or counts them
    from the right (the last ``targets`` columns)."""
    file = _readable_file("data", path)
    text = _read_text("data", file)
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(MAX_CSV_FIELD)
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        most = f"a cell holds at most {MAX_CSV_FIELD} characters"
        raise SpecError("data", f"{file}: {error} ({most})") from None
    finally:
        csv.field_size_limit(limit)
    rows = [row for row in rows if row and any(cell.strip() for cell in row)]
    if not rows:
        raise SpecError("data", f"{file} holds no cells (expected a header row, then rows of numbers)")
    header = [cell.strip() for cell in rows[0]]
    if any(not name for name in header):
        raise SpecError("data", f"{file}: column {header.index('') + 1} of the header row has no name")
    if all(DECIMAL.fullmatch(name) for name in header):
        raise SpecError(
            "data", f"{file}: expected a header row of column names first, got numbers {rows[0][:4]}"
        )
    if len(set(header)) != len(header):
        raise SpecError("data", f"{file}: repeated column name in the header {header}")
    body = rows[1:]
    if not body:
        raise SpecError("data", f"{file} has a header but no rows")
    if len(body) * len(header) > MAX_VALUES:
        raise SpecError("data", f"too many values ({len(body) * len(header)} > {MAX_VALUES})")
    values = np.empty((len(body), len(header)))
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise SpecError(
                f"data line {r}", f"expected {len(header)} cells as in the header, got {len(row)}"
            )
        for c, cell in enumerate(row):
            values[r - 2, c] = parse_number(f"data line {r}, column {header[c]!r}", cell)
    if isinstance(targets, int):
        if not 1 <= targets < len(header):
            raise SpecError("targets", f"expected 1..{len(header) - 1} target columns, got {targets}")
        target_columns = header[-targets:]
    else:
        target_columns = list(targets)
        if not target_columns or any(not name.strip() for name in target_columns):
            raise SpecError("targets", f"expected column names, got {','.join(target_columns)!r}")
        for name in target_columns:
            if name not in header:
                raise SpecError("targets", f"no column {name!r} in {file} (columns: {', '.join(header)})")
    input_columns = [name for name in header if name not in target_columns]
    if not input_columns:
        raise SpecError("targets", "every column is a target; no input columns are left")
    x = values[:, [header.index(name) for name in input_columns]]
    y = values[:, [header.index(name) for name in target_columns]]
    return Data(x, y, source=str(file))
