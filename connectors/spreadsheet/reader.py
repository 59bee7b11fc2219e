"""Read a CSV or XLSX case list into numbered rows of header → raw cell value.

Row numbers are the ones a person sees in the spreadsheet (the header is row 1). Anything wrong
with the file as a whole raises `SpreadsheetError`; a row that is wrong on its own carries a
`problem` and the rows after it are still read.
"""

from __future__ import annotations

import csv
import io
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

MAX_BYTES = 20 * 1024 * 1024
MAX_ROWS = 100_000
ENCODINGS = ("utf-8-sig", "gb18030")

Cell = object  # str, int, float, bool, datetime or None, as the file holds it


class SpreadsheetError(ValueError):
    """The file cannot be imported at all: unreadable, truncated, too big, or without the needed columns."""


@dataclass(frozen=True, slots=True)
class Row:
    number: int
    cells: dict[str, Cell]
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Table:
    headers: list[str]
    rows: list[Row]


def normalize_header(value: object) -> str:
    """Headers are compared after NFKC (full-width letters, digits, spaces) without any whitespace."""
    return "".join(unicodedata.normalize("NFKC", str(value or "")).split())


def decode_text(raw: bytes) -> str:
    """UTF-8 (with or without BOM) first, then GB18030 (a superset of GBK and GB2312)."""
    for encoding in ENCODINGS:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise SpreadsheetError("文件编码无法识别 cannot decode the file as UTF-8 or GBK/GB18030")


def read_table(path: Path, *, max_bytes: int = MAX_BYTES, max_rows: int = MAX_ROWS) -> Table:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SpreadsheetError(f"无法读取文件 cannot read {path}: {exc.strerror}") from None
    if size > max_bytes:
        raise SpreadsheetError(
            f"文件过大 file is {size} bytes, above the limit of {max_bytes} bytes; split the file"
        )
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return read_xlsx(path, max_rows=max_rows)
    if suffix in (".csv", ".txt"):
        return read_csv_bytes(path.read_bytes(), max_rows=max_rows)
    raise SpreadsheetError(f"不支持的文件类型 unsupported file type '{path.suffix}': use .csv or .xlsx")


def read_csv_bytes(raw: bytes, *, max_rows: int = MAX_ROWS) -> Table:
    text = decode_text(raw)
    complete = text.endswith(("\n", "\r"))
    records: list[list[Cell]] = [list(r) for r in csv.reader(io.StringIO(text, newline=""))]
    table = _table(records, [i + 1 for i in range(len(records))], max_rows)
    if not complete and table.rows and table.rows[-1].number == len(records):
        last = table.rows[-1]
        if last.problem is None and len(records[-1]) < len(table.headers):
            table.rows[-1] = Row(last.number, last.cells, "行不完整 row is cut off (file truncated?)")
    return table


def read_xlsx(path: Path, *, max_rows: int = MAX_ROWS) -> Table:
    import openpyxl  # type: ignore[import-untyped]

    records: list[list[Cell]] = []
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            sheet = book.worksheets[0]
            for values in sheet.iter_rows(values_only=True):
                records.append(list(values))
                if len(records) > max_rows + 1:
                    break
        finally:
            book.close()
    except (zipfile.BadZipFile, KeyError, EOFError, OSError, ValueError) as exc:
        raise SpreadsheetError(
            f"XLSX 文件损坏或不完整 {path.name} is not a readable XLSX workbook (truncated?): {exc}"
        ) from None
    return _table(records, [i + 1 for i in range(len(records))], max_rows)


def _blank(values: list[Cell]) -> bool:
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in values)


def _table(records: list[list[Cell]], numbers: list[int], max_rows: int) -> Table:
    start = next((i for i, r in enumerate(records) if not _blank(r)), None)
    if start is None:
        raise SpreadsheetError("文件为空 the file has no header row")
    headers = [normalize_header(h) for h in records[start]]
    while headers and not headers[-1]:
        headers.pop()
    rows: list[Row] = []
    for values, number in zip(records[start + 1 :], numbers[start + 1 :], strict=True):
        if _blank(values):
            continue
        if len(rows) >= max_rows:
            raise SpreadsheetError(f"行数过多 more than {max_rows} data rows; split the file")
        cells = {h: values[i] if i < len(values) else None for i, h in enumerate(headers) if h}
        problem = None
        extra = [v for v in values[len(headers) :] if not _blank([v])]
        if extra:
            problem = f"多余的单元格 row has {len(headers) + len(extra)} cells, the header has {len(headers)}"
        rows.append(Row(number, cells, problem))
    return Table(headers, rows)
