"""Read a manifest from Parquet, CSV or XLSX as text, and convert spreadsheets to Parquet.

Everything is read as strings: a spreadsheet never gets to guess that ``007`` is the number 7 or that
``=HYPERLINK(...)`` should be evaluated (formulas are kept as their literal text, never computed).
Blank cells become null, surrounding whitespace is stripped, fully blank rows are dropped, extra
columns are kept. The spreadsheet row number of each row (header = row 1) is stored in
``row_index`` so messages keep pointing at the row the user sees, even after conversion.

CLI: ``fixtalk manifest import clips.xlsx -o manifest.parquet``.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from manifests.schema import COLUMN_BY_NAME, PATH_COLUMNS, ROW_INDEX

SUFFIXES = (".parquet", ".csv", ".xlsx")


class ManifestError(ValueError):
    """A problem with the whole manifest (unreadable file, missing required column): the run is
    refused. Row-level problems never raise this."""


def cell_text(value: Any) -> str | None:
    """One cell as stripped text; blank / NaN / None -> ``None``. Integral floats lose the ``.0``
    (Excel stores every number as a float)."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        text = str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        text = value.isoformat()
    elif value is pd.NA or value is pd.NaT:
        return None
    else:
        text = str(value)
    text = text.strip()
    return text or None


def _header(names: Iterable[Any], source: str) -> list[str]:
    """Stripped header names; known columns matched case-insensitively; blanks and duplicates refused."""
    out: list[str] = []
    for pos, raw in enumerate(names, start=1):
        name = cell_text(raw)
        if name is None:
            raise ManifestError(f"{source}: header cell {pos} is blank; every column needs a name "
                                "in the first row (e.g. clip_id, portrait, audio)")
        lowered = name.lower().replace(" ", "_")
        if lowered in COLUMN_BY_NAME or lowered == ROW_INDEX:
            name = lowered
        if name in out:
            raise ManifestError(f"{source}: column {name!r} appears twice in the header; "
                                "keep one and rename or delete the other")
        out.append(name)
    return out


def _frame(header: list[str], rows: list[tuple[int, list[str | None]]]) -> pd.DataFrame:
    """Build an all-text frame; rows are (spreadsheet row number, cells); blank rows dropped."""
    records = []
    for number, cells in rows:
        if all(c is None for c in cells):
            continue
        cells = list(cells) + [None] * (len(header) - len(cells))
        record = dict(zip(header, cells[: len(header)]))
        record.setdefault(ROW_INDEX, str(number))
        if record.get(ROW_INDEX) is None:
            record[ROW_INDEX] = str(number)
        records.append(record)
    columns = header + ([ROW_INDEX] if ROW_INDEX not in header else [])
    frame = pd.DataFrame.from_records(records, columns=columns) if records else pd.DataFrame(
        {c: pd.Series([], dtype=object) for c in columns})
    return frame.astype(object).where(frame.notna(), None)


def _read_csv(path: Path) -> pd.DataFrame:
    import csv

    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            first = next(reader)
        except StopIteration:
            raise ManifestError(f"{path}: the file is empty; the first row must name the columns") from None
        header = _header(first, str(path))
        rows = [(reader.line_num, [cell_text(c) for c in line]) for line in reader]
    for number, cells in rows:
        if len(cells) > len(header) and any(c is not None for c in cells[len(header):]):
            raise ManifestError(f"{path}: row {number} has {len(cells)} cells but the header names "
                                f"{len(header)} columns; quote cells that contain commas")
    return _frame(header, rows)


def _read_xlsx(path: Path) -> pd.DataFrame:
    import openpyxl

    # data_only=False: a formula cell yields its literal text ("=A1"), never a computed value.
    book = openpyxl.load_workbook(path, read_only=True, data_only=False)
    try:
        sheet = book.worksheets[0]
        rows_iter = sheet.iter_rows(values_only=True)
        first = next(rows_iter, None)
        if first is None:
            raise ManifestError(f"{path}: the first sheet is empty; row 1 must name the columns")
        while first and first[-1] is None:
            first = first[:-1]
        header = _header(first, f"{path} (sheet {sheet.title!r})")
        rows = [(n, [cell_text(c) for c in line]) for n, line in enumerate(rows_iter, start=2)]
    finally:
        book.close()
    return _frame(header, rows)


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    header = _header(table.column_names, str(path))
    columns = {name: [cell_text(v) for v in table.column(i).to_pylist()]
               for i, name in enumerate(header)}
    n = table.num_rows
    rows = [(pos + 2, [columns[h][pos] for h in header]) for pos in range(n)]
    return _frame(header, rows)


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a manifest (``.parquet``, ``.csv`` or ``.xlsx``) as an all-text frame with ``row_index``.

    Raises :class:`ManifestError` when the file cannot be read at all.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ManifestError(f"{path}: unknown manifest format {suffix or '(no suffix)'!r}; "
                            "use .parquet, .csv or .xlsx")
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file not found")
    try:
        if suffix == ".csv":
            return _read_csv(path)
        if suffix == ".xlsx":
            return _read_xlsx(path)
        return _read_parquet(path)
    except ManifestError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is unreadable
        raise ManifestError(f"{path}: cannot read the manifest as {suffix[1:]}: "
                            f"{type(exc).__name__}: {exc}") from exc


def write_parquet(frame: pd.DataFrame, dst: str | os.PathLike[str]) -> Path:
    """Write an all-text manifest to Parquet atomically (temp name, then rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Missing cells may arrive as None, NaN or pd.NA (pandas 3 string columns); all become null.
    table = pa.Table.from_pydict({c: pa.array([cell_text(v) for v in frame[c].tolist()], type=pa.string())
                                  for c in frame.columns})
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, dst)
    return dst


def import_manifest(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> pd.DataFrame:
    """Convert a CSV/XLSX (or Parquet) manifest into a text-only Parquet manifest at ``dst``.

    Relative media paths are rewritten relative to ``dst``'s folder, so they keep pointing at the
    same files when the Parquet lands somewhere else than the spreadsheet.
    """
    src_dir = Path(src).resolve().parent
    dst_dir = Path(dst).resolve().parent
    frame = read_table(src)
    if src_dir != dst_dir:
        for col in PATH_COLUMNS:
            if col in frame.columns:
                frame[col] = [_rebase(v, src_dir, dst_dir) for v in frame[col]]
    write_parquet(frame, dst)
    return frame


def _rebase(value: str | None, src_dir: Path, dst_dir: Path) -> str | None:
    if value is None or os.path.isabs(value):
        return value
    return os.path.relpath(os.path.normpath(src_dir / value), dst_dir)
