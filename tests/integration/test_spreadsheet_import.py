"""`liandong import`: real XLSX and GBK CSV files published to a real broker, re-runs and resumes."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.framework import DEAD_LETTER_TOPIC, Health
from connectors.sdk import LiandongClient, event_id_for
from connectors.spreadsheet.importer import ImportOptions, record_id_for
from events.catalog import Catalog, topic_for
from events.envelope import Envelope
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from services.embedded_broker import EmbeddedBroker
from services.import_cli import import_file
from tests.support import topic_records

UNIT = "shilou.enforcement-office"
TOPIC = topic_for("case")
HEADERS = ["案件编号", "立案日期", "镇街", "案件类型", "案件名称", "当事人", "立案文号", "是否重大案件"]


def good_rows(n: int) -> list[list[Any]]:
    return [
        [f"SL-2026-{i:04d}", "2026年11月29日", "石楼", "违法建设", f"未批先建第{i}栋", "张三", None, "否"]
        for i in range(1, n + 1)
    ]


def write_xlsx(path: Path, rows: list[list[Any]]) -> Path:
    import openpyxl  # type: ignore[import-untyped]

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(HEADERS)
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def write_gbk_csv(path: Path, rows: list[list[Any]]) -> Path:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADERS)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    path.write_bytes(out.getvalue().encode("gbk"))
    return path


def options(path: Path, **overrides: Any) -> ImportOptions:
    report = path.with_name(path.stem + ".report.csv")
    base: dict[str, Any] = {
        "path": path,
        "unit": UNIT,
        "report_path": report,
        "state_path": report.with_suffix(".state.json"),
        "retry_base_delay_s": 0.01,
        "progress": io.StringIO(),
    }
    return ImportOptions(**{**base, **overrides})


def report_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def case_id(subject: str) -> str:
    return event_id_for(UNIT, record_id_for("case.filed.v1", subject))


def ce_ids(records: list[Any]) -> list[str]:
    return [dict(r.headers)["ce_id"].decode() for r in records]


async def decoded(records: list[Any]) -> dict[str, Envelope]:
    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    return {e.subject: e for e in (codec.decode(r.value, r.headers) for r in records)}


async def test_an_xlsx_publishes_its_good_rows_and_reports_each_bad_one(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    rows = [
        *good_rows(3),
        ["SL-2026-0099", "2026-13-40", "石楼镇", "违法建设", "日期错误", None, None, None],
        ["SL-2026-0002", "2026-11-29", "石楼", "违法建设", "重复的行", None, None, None],
        [
            "（ＳＬ）２０２６－７",
            datetime(2026, 11, 28),
            "石楼镇",
            "占道经营",
            "占道卖水果",
            "李四",
            "番执〔2026〕7号",
            "是",
        ],
        ["SL-2026-0100", 46355, "南村", "噪声", "不属本单位辖区", None, None, None],
    ]
    path = write_xlsx(tmp_path / "案件台账.xlsx", rows)
    health = Health("spreadsheet", "inbound")
    code = await import_file(fresh_broker.bootstrap, options(path), health=health)
    assert code == 1
    events = await decoded(await topic_records(fresh_broker.bootstrap, TOPIC))
    assert sorted(events) == ["SL-2026-0001", "SL-2026-0002", "SL-2026-0003", "SL-2026-7"]
    fullwidth = events["SL-2026-7"]
    assert fullwidth.id == case_id("SL-2026-7")
    assert fullwidth.data["category"] == "road_occupation"
    assert fullwidth.data["party_name"] == "李四"
    assert fullwidth.data["case_number"] == "番执〔2026〕7号"
    assert fullwidth.data["requires_legal_review"] is True
    assert events["SL-2026-0002"].data["title"] == "未批先建第2栋"
    report = report_rows(path.with_name("案件台账.report.csv"))
    assert [(r["row"], r["column"], r["value"]) for r in report] == [
        ("5", "立案日期", "2026-13-40"),
        ("6", "案件编号", "SL-2026-0002"),
        ("8", "镇街", "南村"),
    ]
    assert "duplicate of row 3" in report[1]["reason"]
    assert all(r["reason"] for r in report)
    assert (health.counts["read"], health.counts["published"], health.counts["rejected"]) == (7, 4, 3)
    dead = await topic_records(fresh_broker.bootstrap, DEAD_LETTER_TOPIC)
    assert sorted(json.loads(r.value)["row"] for r in dead) == [5, 8]


async def test_a_gbk_csv_re_run_publishes_no_new_event_ids(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    path = write_gbk_csv(tmp_path / "cases.csv", good_rows(5))
    assert await import_file(fresh_broker.bootstrap, options(path)) == 0
    first = ce_ids(await topic_records(fresh_broker.bootstrap, TOPIC))
    assert sorted(first) == sorted(case_id(f"SL-2026-{i:04d}") for i in range(1, 6))
    again = Health("spreadsheet", "inbound")
    assert await import_file(fresh_broker.bootstrap, options(path), health=again) == 0
    assert again.counts["published"] == 0  # everything was acknowledged: nothing to resume
    assert await import_file(fresh_broker.bootstrap, options(path, restart=True)) == 0
    both = ce_ids(await topic_records(fresh_broker.bootstrap, TOPIC))
    assert len(both) == 10
    assert set(both) == set(first)


class Interrupted(RuntimeError):
    pass


class FailsAfter(LiandongClient):
    """Our own port, made to stop after `n` acknowledged publishes, as a crash would."""

    def __init__(self, bootstrap: str, n: int) -> None:
        super().__init__(bootstrap, UNIT)
        self.left = n

    async def __aenter__(self) -> FailsAfter:
        await super().__aenter__()
        return self

    async def publish(self, *events: Envelope) -> None:
        if self.left == 0:
            raise Interrupted("the import was interrupted")
        self.left -= 1
        await super().publish(*events)


async def test_an_interrupted_import_resumes_after_the_last_acknowledged_row(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    path = write_xlsx(tmp_path / "cases.xlsx", good_rows(5))
    opts = options(path, batch_size=2)
    async with FailsAfter(fresh_broker.bootstrap, 1) as failing:
        with pytest.raises(Interrupted):
            await import_file(fresh_broker.bootstrap, opts, client=failing)
    assert json.loads(opts.state_path.read_text(encoding="utf-8"))["last_row"] == 3
    assert len(await topic_records(fresh_broker.bootstrap, TOPIC)) == 2
    health = Health("spreadsheet", "inbound")
    assert await import_file(fresh_broker.bootstrap, opts, health=health) == 0
    assert health.counts["published"] == 3
    ids = ce_ids(await topic_records(fresh_broker.bootstrap, TOPIC))
    assert sorted(ids) == sorted(case_id(f"SL-2026-{i:04d}") for i in range(1, 6))
    assert "5/5 rows" in opts.progress.getvalue()  # type: ignore[union-attr]


async def test_a_cut_off_xlsx_or_missing_columns_publish_nothing_and_exit_2(
    fresh_broker: EmbeddedBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = write_xlsx(tmp_path / "whole.xlsx", good_rows(50))
    cut = tmp_path / "cut.xlsx"
    cut.write_bytes(whole.read_bytes()[:-200])
    assert await import_file(fresh_broker.bootstrap, options(cut)) == 2
    assert "not a readable XLSX" in capsys.readouterr().err
    missing = tmp_path / "missing.csv"
    missing.write_bytes("案件编号,当事人\nSL-1,张三\n".encode("gbk"))
    assert await import_file(fresh_broker.bootstrap, options(missing)) == 2
    err = capsys.readouterr().err
    assert "立案日期" in err
    assert "案件类型" in err
    assert await import_file(fresh_broker.bootstrap, options(missing, unit="nowhere.unit")) == 2
    assert await import_file(fresh_broker.bootstrap, options(whole, max_bytes=100)) == 2
    assert "limit of 100 bytes" in capsys.readouterr().err


def test_the_import_command_runs_as_a_process_and_reports_bad_rows(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    from tests.support import REPO

    rows = [
        *good_rows(2),
        ["SL-2026-0099", "2026年13月40日", "石楼", "违法建设", "日期写错", "李四", None, "否"],
    ]
    sheet = write_xlsx(tmp_path / "台账.xlsx", rows)
    report = tmp_path / "report.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "import",
            str(sheet),
            "--source",
            UNIT,
            "--report",
            str(report),
        ],
        env={
            **os.environ,
            "LIANDONG_KAFKA_BOOTSTRAP": fresh_broker.bootstrap,
            "LIANDONG_DATA_DIR": str(tmp_path),
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr  # some rows refused, the others published
    lines = report.read_text(encoding="utf-8-sig").splitlines()
    assert any("立案日期" in line and "2026年13月40日" in line for line in lines), lines
    # The run's outcome is kept in the hub's store: `connectors status` shows it.
    status = subprocess.run(
        [sys.executable, "-m", "services.cli", "connectors", "status"],
        env={**os.environ, "LIANDONG_DATA_DIR": str(tmp_path)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "台账.xlsx: 2 published, 1 rejected" in status.stdout, status.stdout + status.stderr
