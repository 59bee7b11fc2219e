"""Every list of the query API as JSON, CSV or XLSX, from the same `columns` and rows.

CSV is UTF-8 with a byte-order mark, so that Excel on a Chinese Windows opens it as UTF-8 rather
than GBK. Both files carry one header row of "中文 English" labels and the columns in their order.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from anyio import to_thread
from fastapi.responses import JSONResponse, Response
from openpyxl import Workbook  # type: ignore[import-untyped]

Format = Literal["json", "csv", "xlsx"]
CSV_MEDIA = "text/csv; charset=utf-8"
XLSX_MEDIA = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
BOM = "\ufeff"
# Excel and LibreOffice run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    zh: str
    en: str

    @property
    def label(self) -> str:
        return f"{self.zh} {self.en}"

    def as_json(self) -> dict[str, str]:
        return {"key": self.key, "zh": self.zh, "en": self.en}


def cell(value: Any) -> str | int | float:
    """A JSON value as one spreadsheet cell: numbers stay numbers, lists join, booleans read 是/否."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, int | float):
        return value
    if isinstance(value, list | tuple):
        return "; ".join(str(cell(v)) for v in value)
    text = str(value)
    # A leading apostrophe keeps a text such as "-3" or "=cmd" from being run; numbers never get one.
    return "'" + text if text.startswith(_FORMULA_START) else text


def table(columns: Sequence[Column], items: Iterable[Mapping[str, Any]]) -> list[list[str | int | float]]:
    """The header row of labels, then one row of cells per item."""
    rows: list[list[str | int | float]] = [[c.label for c in columns]]
    rows.extend([cell(item.get(c.key)) for c in columns] for item in items)
    return rows


def csv_bytes(columns: Sequence[Column], items: Iterable[Mapping[str, Any]]) -> bytes:
    buffer = io.StringIO()
    buffer.write(BOM)
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows(table(columns, items))
    return buffer.getvalue().encode("utf-8")


def xlsx_bytes(columns: Sequence[Column], items: Iterable[Mapping[str, Any]], title: str) -> bytes:
    # write_only streams rows into the archive instead of keeping a cell object per value.
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title[:31] or "export")
    sheet.freeze_panes = "A2"
    for row in table(columns, items):
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _disposition(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


async def respond(
    fmt: Format,
    name: str,
    columns: Sequence[Column],
    items: Sequence[Any],
    *,
    total: int,
    limit: int,
    offset: int,
    extra: Mapping[str, Any] | None = None,
    convert: Callable[[Any], Mapping[str, Any]] | None = None,
) -> Response:
    """The list response: JSON with paging and columns, or the whole list as a file. With
    `convert`, `items` are database rows and `convert` turns each one into its item."""
    # A file of 50,000 rows takes seconds of CPU: built in a worker thread, the event loop keeps
    # answering other requests and live streams meanwhile. The rows are turned into items there
    # too: for 15,000 rows that alone held the loop for up to 180 ms.
    if fmt in ("csv", "xlsx"):
        build = _file_builder(fmt, columns, name)
        return Response(
            await to_thread.run_sync(build, items if convert is None else _Converted(items, convert)),
            media_type=CSV_MEDIA if fmt == "csv" else XLSX_MEDIA,
            headers={"Content-Disposition": _disposition(f"{name}.{fmt}")},
        )
    body: dict[str, Any] = {
        "items": list(items) if convert is None else [convert(x) for x in items],
        "total": total,
        "limit": limit,
        "offset": offset,
        "columns": [c.as_json() for c in columns],
    }
    if extra:
        body.update(extra)
    return JSONResponse(body)


@dataclass(frozen=True, slots=True)
class _Converted:
    """Rows turned into items one by one as the file is written, in the file's thread."""

    rows: Sequence[Any]
    convert: Callable[[Any], Mapping[str, Any]]

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        return map(self.convert, self.rows)


def _file_builder(
    fmt: Format, columns: Sequence[Column], name: str
) -> Callable[[Iterable[Mapping[str, Any]]], bytes]:
    if fmt == "csv":
        return lambda items: csv_bytes(columns, items)
    return lambda items: xlsx_bytes(columns, items, name)
