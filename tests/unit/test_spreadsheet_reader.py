"""Spreadsheet rows and the provincial column mapping: dates, full-width input, encodings, headers."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from connectors.framework import RowProblem
from connectors.spreadsheet.mapping import (
    BadValue,
    ColumnMapping,
    MappedRow,
    case_key,
    clean_id,
    clean_text,
    parse_date,
)
from connectors.spreadsheet.reader import Row, SpreadsheetError, read_csv_bytes, read_table, read_xlsx
from events.directory import Directory

UNIT = "shilou.enforcement-office"
HEADER = "案件编号,立案日期,镇街,案件类型,案件名称,当事人,是否重大案件\n"


def mapping() -> ColumnMapping:
    return ColumnMapping.load(Directory.load())


def mapped(line: str, header: str = HEADER) -> MappedRow | list[RowProblem]:
    table = read_csv_bytes((header + line + "\n").encode())
    m = mapping()
    return m.map_row(table.rows[0], m.resolve(table.headers), UNIT)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-29",
        "2026/11/29",
        "2026.11.29",
        "2026年11月29日",
        "20261129",
        "２０２６年１１月２９日",
        " 2026-11-29 10:30:00",
        20261129,
        46355,
        46355.0,
        datetime(2026, 11, 29, 9, 0),
        date(2026, 11, 29),
    ],
)
def test_the_usual_chinese_date_forms_and_excel_dates_all_read_as_the_same_day(value: object) -> None:
    assert parse_date(value) == date(2026, 11, 29)


@pytest.mark.parametrize("value", ["2026-02-30", "明天", "29/11/2026", ""])
def test_a_value_that_is_not_a_real_date_is_refused_with_a_reason(value: str) -> None:
    with pytest.raises(BadValue):
        parse_date(value)


def test_full_width_ids_lose_their_width_and_spaces_but_chinese_text_keeps_its_punctuation() -> None:
    assert clean_id("番执（２０２６）　００１２号") == "番执(2026)0012号"
    assert clean_id(12345.0) == "12345"
    assert case_key("（ＳＬ）２０２６－７") == case_key("(SL)2026-7") == case_key("SL-2026-7") == "SL-2026-7"
    assert case_key("番执【2026】0012") == "番执-2026-0012"
    assert clean_text("村民未批先建，三层　住宅（ＡＢ栋）") == "村民未批先建，三层 住宅（AB栋）"


def test_a_row_maps_to_case_filed_fields_with_township_and_category_codes() -> None:
    result = mapped("ＳＬ－２０２６－０００１,2026年11月29日,石楼,违法建设,未批先建,张三,是")
    assert isinstance(result, MappedRow)
    assert result.subject == "SL-2026-0001"
    assert result.time == datetime(2026, 11, 28, 16, 0, tzinfo=UTC)  # midnight in Guangzhou
    assert result.data == {
        "handling_unit": UNIT,
        "township": "shilou",
        "category": "illegal_construction",
        "title": "未批先建",
        "party_name": "张三",
        "requires_legal_review": True,
    }


def test_full_township_names_and_alternative_headers_are_accepted() -> None:
    header = "案号,立案日期,所属镇街,案由类别,案由\n"
    result = mapped("SL-1,2026/11/29,石楼镇,占道经营,占道经营水果", header)
    assert isinstance(result, MappedRow)
    assert (result.data["township"], result.data["category"]) == ("shilou", "road_occupation")


def test_every_bad_value_of_a_row_is_named_with_its_column_and_reason() -> None:
    result = mapped("SL-1,2026-13-01,火星镇,偷菜,,张三,也许")
    assert isinstance(result, list)
    assert [(p.row, p.column, p.value) for p in result] == [
        (2, "立案日期", "2026-13-01"),
        (2, "镇街", "火星镇"),
        (2, "案件类型", "偷菜"),
        (2, "案件名称", ""),
        (2, "是否重大案件", "也许"),
    ]
    assert all(p.reason for p in result)


def test_missing_required_columns_are_all_named_at_once() -> None:
    table = read_csv_bytes("案件编号,当事人\nSL-1,张三\n".encode())
    with pytest.raises(SpreadsheetError) as missing:
        mapping().resolve(table.headers)
    for name in ("立案日期", "镇街", "案件类型", "案件名称"):
        assert name in str(missing.value)


def test_headers_typed_with_full_width_spaces_still_match() -> None:
    table = read_csv_bytes("案件　编号 ,立案日期\nSL-1,2026-11-29\n".encode())
    assert table.headers == ["案件编号", "立案日期"]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
def test_csv_in_utf8_with_or_without_bom_and_in_gbk_reads_the_same(encoding: str) -> None:
    table = read_csv_bytes((HEADER + "SL-1,2026-11-29,石楼,噪声,夜间施工噪声,李四,否\n").encode(encoding))
    assert table.headers[0] == "案件编号"
    assert table.rows[0].cells["案件名称"] == "夜间施工噪声"


def test_a_csv_cut_mid_row_reports_the_partial_row_and_keeps_the_others() -> None:
    table = read_csv_bytes((HEADER + "SL-1,2026-11-29,石楼,噪声,夜间施工,李四,否\nSL-2,2026-11").encode())
    assert table.rows[0].problem is None
    assert table.rows[1].number == 3
    assert table.rows[1].problem is not None
    result = mapping().map_row(table.rows[1], mapping().resolve(table.headers), UNIT)
    assert isinstance(result, list)
    assert "cut off" in result[0].reason


def test_blank_rows_are_skipped_but_row_numbers_stay_those_of_the_sheet() -> None:
    table = read_csv_bytes((HEADER + ",,,,,,\nSL-1,2026-11-29,石楼,噪声,t,,\n").encode())
    assert [r.number for r in table.rows] == [3]


def test_the_same_case_id_typed_differently_gives_the_same_row_key() -> None:
    m = mapping()
    columns = {"subject": "案件编号"}
    first = Row(2, {"案件编号": "SL-2026-0001"})
    second = Row(3, {"案件编号": "ＳＬ－２０２６－０００１ "})
    assert m.key_of(first, columns) == m.key_of(second, columns)


def test_files_above_the_size_or_row_limit_are_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text(HEADER + "SL-1,2026-11-29,石楼,噪声,t,,\n" * 5, encoding="utf-8")
    with pytest.raises(SpreadsheetError, match="limit of 10 bytes"):
        read_table(path, max_bytes=10)
    with pytest.raises(SpreadsheetError, match="more than 3 data rows"):
        read_table(path, max_rows=3)


def test_an_xlsx_with_date_cells_and_a_cut_off_xlsx(tmp_path: Path) -> None:
    import openpyxl  # type: ignore[import-untyped]

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["案件编号", "立案日期"])
    sheet.append(["SL-1", datetime(2026, 11, 29)])
    path = tmp_path / "cases.xlsx"
    book.save(path)
    table = read_xlsx(path)
    assert parse_date(table.rows[0].cells["立案日期"]) == date(2026, 11, 29)
    cut = tmp_path / "cut.xlsx"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SpreadsheetError, match="not a readable XLSX"):
        read_table(cut)


def test_an_unknown_file_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cases.pdf"
    path.write_bytes(b"%PDF")
    with pytest.raises(SpreadsheetError, match="unsupported file type"):
        read_table(path)
