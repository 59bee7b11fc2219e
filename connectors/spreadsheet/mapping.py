"""The column mapping, as data, from a provincial case-list export to the fields of `case.filed.v1`.

Values are normalised the way people really type them: NFKC for ids, codes and dates (full-width
digits, letters, spaces and 全角括号), while Chinese text keeps its own punctuation and only loses
full-width letters, digits and spaces.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from connectors.framework import RowProblem
from connectors.spreadsheet.reader import Row, SpreadsheetError
from events.directory import Directory

DEFAULT_MAPPING = Path(__file__).with_name("provincial_export.json")
LOCAL = ZoneInfo("Asia/Shanghai")
_EXCEL_EPOCH = date(1899, 12, 30)
_DATE = re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:[ T]+[\d:]+)?")
_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
_BRACKETS = re.compile(r"[-()\[\]〔〕【】]*[()\[\]〔〕【】][-()\[\]〔〕【】]*")
_FULL_WIDTH_ALNUM = {
    c: c - 0xFEE0
    for r in ((0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A))
    for c in range(r[0], r[1] + 1)
}
_FULL_WIDTH_ALNUM[0x3000] = 0x20


class BadValue(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Column:
    field: str
    headers: tuple[str, ...]
    kind: str
    required: bool


@dataclass(frozen=True, slots=True)
class MappedRow:
    number: int
    subject: str
    time: datetime
    data: dict[str, Any]


def nfkc(value: object) -> str:
    """NFKC and trimmed: for ids, codes, dates and numbers."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # an id typed into a number cell comes back as 12345.0
    return unicodedata.normalize("NFKC", "" if value is None else str(value)).strip()


def clean_id(value: object) -> str:
    """Case ids: NFKC (（２０２６）→ (2026)) with every space removed."""
    return "".join(nfkc(value).split())


def case_key(value: object) -> str:
    """A case id as an event subject: brackets (also 全角括号 and 〔〕【】) become '-' separators.

    `（ＳＬ）２０２６－７`, `(SL)2026-7` and `SL-2026-7` are one case; the catalog allows
    A-Z a-z 0-9 . _ : / - in a subject, so a bracket cannot be kept as typed.
    """
    return _BRACKETS.sub("-", clean_id(value)).strip("-")


def clean_text(value: object) -> str:
    """Chinese text: full-width letters, digits and spaces become ASCII; 、，（） stay as typed."""
    text = "" if value is None else str(value)
    return " ".join(text.translate(_FULL_WIDTH_ALNUM).split())


def parse_date(value: object) -> date:
    """2026-11-29, 2026/11/29, 2026.11.29, 2026年11月29日, 20261129, Excel date cells and serials."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if 20_000 <= value < 80_000:  # an Excel serial day number (1954 … 2119)
            return _EXCEL_EPOCH + timedelta(days=int(value))
        value = str(int(value))
    text = nfkc(value)
    match = _DATE.fullmatch(text) or _COMPACT.fullmatch(text)
    if match is None:
        raise BadValue("日期格式无法识别 not a date (use 2026-11-29, 2026/11/29 or 2026年11月29日)")
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise BadValue("日期不存在 no such date") from None


class ColumnMapping:
    def __init__(self, doc: Mapping[str, Any], directory: Directory) -> None:
        self.event_type: str = doc["event_type"]
        self.columns = tuple(
            Column(name, tuple(c["headers"]), c["kind"], bool(c["required"]))
            for name, c in doc["columns"].items()
        )
        self._categories: dict[str, str] = {nfkc(k): v for k, v in doc["categories"].items()}
        self._codes = set(self._categories.values())
        self._yes = {nfkc(v).upper() for v in doc["yes"]}
        self._no = {nfkc(v).upper() for v in doc["no"]}
        self._townships: dict[str, str] = {}
        for code, township in directory.townships.items():
            name = nfkc(township.name_zh)
            short = re.sub(r"(街道|镇|街)$", "", name)
            for key in (code, name, short, short + "街"):
                self._townships[key] = code
        self._units = {nfkc(u.name_zh): u.id for u in directory.units.values()}
        self._units.update({u: u for u in directory.units})

    @classmethod
    def load(cls, directory: Directory, path: Path = DEFAULT_MAPPING) -> ColumnMapping:
        return cls(json.loads(path.read_text(encoding="utf-8")), directory)

    def resolve(self, headers: list[str]) -> dict[str, str]:
        """Field → the file's header for it; every missing required column is named at once."""
        present = set(headers)
        found: dict[str, str] = {}
        missing: list[str] = []
        for column in self.columns:
            header = next((h for h in column.headers if h in present), None)
            if header is not None:
                found[column.field] = header
            elif column.required:
                missing.append(f"{'/'.join(column.headers)} ({column.field})")
        if missing:
            raise SpreadsheetError(
                "缺少必需的列 missing required columns: " + "; ".join(missing) + " — nothing was published"
            )
        return found

    def key_of(self, row: Row, columns: Mapping[str, str]) -> str:
        return case_key(row.cells.get(columns["subject"]))

    def map_row(self, row: Row, columns: Mapping[str, str], unit: str) -> MappedRow | list[RowProblem]:
        if row.problem is not None:
            return [RowProblem(row.number, "", _show(list(row.cells.values())), row.problem)]
        values: dict[str, Any] = {}
        problems: list[RowProblem] = []
        for column in self.columns:
            header = columns.get(column.field)
            raw = row.cells.get(header) if header else None
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                if column.required:
                    problems.append(RowProblem(row.number, header or column.field, "", "必填项为空 required"))
                continue
            try:
                values[column.field] = self._convert(column.kind, raw)
            except BadValue as exc:
                problems.append(RowProblem(row.number, header or column.field, _show(raw), str(exc)))
        if problems:
            return problems
        subject = values.pop("subject")
        day: date = values.pop("time")
        data: dict[str, Any] = {"handling_unit": unit, "requires_legal_review": False, **values}
        occurred = datetime.combine(day, time(), LOCAL).astimezone(UTC)
        return MappedRow(row.number, subject, occurred, data)

    def _convert(self, kind: str, raw: object) -> object:
        if kind == "id":
            return clean_id(raw)
        if kind == "case_id":
            return case_key(raw)
        if kind == "text":
            return clean_text(raw)
        if kind == "date":
            return parse_date(raw)
        key = nfkc(raw)
        if kind == "township":
            code = self._townships.get("".join(key.split()))
            if code is None:
                raise BadValue("未知镇街 unknown township (not in events/directory/units.json)")
            return code
        if kind == "category":
            category = self._categories.get(key) or (key if key in self._codes else None)
            if category is None:
                raise BadValue("未知案件类型 unknown category; known: " + "、".join(self._categories))
            return category
        if kind == "yes_no":
            if key.upper() in self._yes:
                return True
            if key.upper() in self._no:
                return False
            raise BadValue("应为 是 或 否 must be 是 or 否")
        if kind == "unit":
            unit = self._units.get(key)
            if unit is None:
                raise BadValue("未知单位 unknown unit (not in events/directory/units.json)")
            return unit
        raise SpreadsheetError(f"mapping names an unknown column kind '{kind}'")


def _show(value: object) -> str:
    if isinstance(value, list):
        return ",".join("" if v is None else str(v) for v in value)
    return "" if value is None else str(value)
