"""Exports of the query API's lists: CSV with BOM and XLSX, with "中文 English" header labels."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import openpyxl  # type: ignore[import-untyped]
import pytest

from services.api.export import BOM, Column, Format, cell, csv_bytes, respond, xlsx_bytes
from services.api.listing import EXPORT_MAX, Page, ProblemError

COLUMNS = (
    Column("case_id", "案件编号", "Case id"),
    Column("fine", "罚款（分）", "Fine (fen)"),
    Column("units", "涉及单位", "Units"),
    Column("overdue", "逾期", "Overdue"),
    Column("note", "说明", "Note"),
)
ITEMS: list[dict[str, Any]] = [
    {"case_id": "C1", "fine": 500_000, "units": ["a", "b"], "overdue": True, "note": "张三，电话138****5678"},
    {"case_id": "C2", "fine": None, "units": [], "overdue": False, "note": '=HYPERLINK("x")', "extra": 1},
]


def test_csv_starts_with_a_bom_and_labels_each_column_in_chinese_then_english() -> None:
    body = csv_bytes(COLUMNS, ITEMS)

    assert body.startswith(BOM.encode())
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0] == [
        "案件编号 Case id",
        "罚款（分） Fine (fen)",
        "涉及单位 Units",
        "逾期 Overdue",
        "说明 Note",
    ]
    assert rows[1] == ["C1", "500000", "a; b", "是", "张三，电话138****5678"]
    assert rows[2] == ["C2", "", "", "否", '\'=HYPERLINK("x")']


def test_xlsx_opens_with_openpyxl_and_keeps_numbers_as_numbers() -> None:
    book = openpyxl.load_workbook(io.BytesIO(xlsx_bytes(COLUMNS, ITEMS, "cases")), read_only=True)
    sheet = book["cases"]
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]

    assert rows[0][0] == "案件编号 Case id"
    assert rows[1] == ["C1", 500000, "a; b", "是", "张三，电话138****5678"]
    # openpyxl reads an empty cell back as None.
    assert rows[2] == ["C2", None, None, "否", '\'=HYPERLINK("x")']


def test_a_text_that_would_run_as_a_formula_is_kept_as_text_but_a_negative_number_stays_a_number() -> None:
    assert cell("-1+2") == "'-1+2"
    assert cell("@SUM(A1)") == "'@SUM(A1)"
    assert cell(-3) == -3
    assert cell(0.25) == 0.25


async def test_the_json_list_carries_paging_and_the_columns_and_only_json_has_extra_fields() -> None:
    response = await respond(
        "json", "cases", COLUMNS, ITEMS, total=7, limit=2, offset=4, extra={"reference": 1}
    )
    body = json.loads(bytes(response.body))

    assert (body["total"], body["limit"], body["offset"], body["reference"]) == (7, 2, 4, 1)
    assert body["columns"][0] == {"key": "case_id", "zh": "案件编号", "en": "Case id"}
    assert body["items"] == ITEMS


@pytest.mark.parametrize(
    ("fmt", "media", "suffix"),
    [("csv", "text/csv", ".csv"), ("xlsx", "application/vnd.openxmlformats", ".xlsx")],
)
async def test_a_file_export_is_an_attachment_named_after_the_list(
    fmt: Format, media: str, suffix: str
) -> None:
    response = await respond(fmt, "publication-register", COLUMNS, ITEMS, total=2, limit=100, offset=0)

    assert response.headers["content-type"].startswith(media)
    assert f'filename="publication-register{suffix}"' in response.headers["content-disposition"]


def test_a_page_is_a_slice_but_an_export_is_the_whole_list() -> None:
    items = list(range(10))

    assert Page(limit=3, offset=4, format="json").slice(items) == [4, 5, 6]
    assert Page(limit=3, offset=4, format="csv").slice(items) == items


def test_an_export_of_more_rows_than_the_cap_is_refused_413_naming_format() -> None:
    with pytest.raises(ProblemError) as refused:
        Page(limit=100, offset=0, format="xlsx").slice(range(EXPORT_MAX + 1))

    assert refused.value.response.status_code == 413
    assert json.loads(bytes(refused.value.response.body))["errors"][0]["field"] == "format"
