"""A unit publishes only as itself, only the types and townships the directory grants it: in the
gateway, the SDK, the spreadsheet importer and the worker, by one implementation (`events/grants.py`).

Records published straight to the broker bypass the gateway; the worker's gate dead-letters those
the directory does not grant, and the hub's own events (directory sync, clock alerts, anomalies,
acknowledgements made through the API) pass it.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.framework import Health
from connectors.http_gateway import ingest as gateway
from connectors.kafka.publisher import KafkaPublisher
from connectors.sdk import InvalidEvent, LiandongClient
from connectors.spreadsheet.importer import ImportOptions, run
from connectors.spreadsheet.mapping import ColumnMapping
from events.catalog import Catalog, topic_for
from events.directory import Directory
from events.envelope import TYPE_PREFIX, Envelope
from events.grants import HUB_PUBLISHES, HUB_SOURCE, Grants, township_fields
from events.ids import uuid7
from events.jsonavro import from_json
from events.registry import LocalSchemaRegistry
from events.samples import SampleContext, sample_data
from events.serde import EventCodec
from projections.db import make_engine
from projections.migrate import upgrade
from projections.runtime import Projector
from projections.schema import cases, event_history
from services.embedded_broker import EmbeddedBroker, free_port
from services.worker.app import DEAD_LETTER_TOPIC
from tests.processes import Workers
from tests.projector_kit import CALENDAR, CLOCK_SETTINGS, ListDeadLetters, SettableIncarnation, records
from tests.support import case_event, topic_records, wait_for

CATALOG = Catalog.load()
DIRECTORY = Directory.load()
UNIT = "shilou.enforcement-office"  # covers shilou only
OTHER_OFFICE = "shiqiao.enforcement-office"  # covers shiqiao only
POLICE = "shilou.police-station"  # may not file cases
FILED = TYPE_PREFIX + "case.filed.v1"
ACKNOWLEDGED = TYPE_PREFIX + "alert.acknowledged.v1"
LOG = Grants(DIRECTORY, CATALOG, hub_issued=True)  # the worker's gate
GATEWAY = Grants(DIRECTORY, CATALOG)  # what a key, a client or an import may publish


def typed_event(event_type: str, source: str, subject: str = "G-1", **data: Any) -> Envelope:
    """An event of any type with sample data (Avro-ready), overridden by `data`."""
    kind = CATALOG.get(event_type)
    raw = {**sample_data(kind.latest), **data}
    values = from_json(kind.latest, raw, "data", DIRECTORY.knows)
    return Envelope(str(uuid7()), event_type, source, subject, datetime.now(UTC), values)


# --- the rules ------------------------------------------------------------------------------------


def test_a_unit_may_publish_a_granted_type_about_a_township_it_covers() -> None:
    assert GATEWAY.check(case_event("filed", "G-1"), publisher=UNIT) is None
    assert LOG(case_event("filed", "G-1")) is None


@pytest.mark.parametrize(
    ("event", "publisher", "reason", "field"),
    [
        pytest.param(
            case_event("filed", "G-1", source=OTHER_OFFICE), UNIT, "forged_source", "source", id="forged"
        ),
        pytest.param(
            case_event("filed", "G-1", source="nowhere.office"),
            None,
            "unknown_source",
            "source",
            id="unknown",
        ),
        pytest.param(
            case_event("filed", "G-1", source=POLICE), None, "type_not_permitted", "type", id="type"
        ),
        pytest.param(
            case_event("filed", "G-1", source=OTHER_OFFICE),
            None,
            "township_not_permitted",
            "data.township",
            id="township",
        ),
    ],
)
def test_each_refusal_names_its_reason_and_field_on_every_entry_point(
    event: Envelope, publisher: str | None, reason: str, field: str
) -> None:
    for grants in (GATEWAY, LOG):
        refusal = grants.check(event, publisher=publisher)
        assert refusal is not None
        assert (refusal.reason, refusal.field) == (reason, field)
        assert event.source in refusal.detail or reason == "township_not_permitted"


def test_the_gateway_uses_the_same_rules_and_messages_as_the_shared_module() -> None:
    assert gateway.township_fields is township_fields
    forged = case_event("filed", "G-1", source=OTHER_OFFICE)
    doc = {
        "specversion": "1.0",
        "id": forged.id,
        "source": forged.source,
        "type": forged.type,
        "subject": forged.subject,
        "time": forged.time.isoformat(),
        "data": dict(forged.data),
    }
    with pytest.raises(gateway.Forbidden) as info:
        gateway.validate_event(doc, UNIT, CATALOG, DIRECTORY, gateway.Limits())
    refusal = GATEWAY.check(forged, publisher=UNIT)
    assert refusal is not None
    assert (info.value.reason, info.value.field, info.value.detail) == (
        refusal.reason,
        refusal.field,
        refusal.detail,
    )


def test_the_hubs_own_source_is_what_its_publishers_use() -> None:
    from projections import anomaly_announcer, clock_scanner, directory_store
    from services import directory_sync

    assert {directory_sync.HUB_SOURCE, anomaly_announcer.HUB_SOURCE, clock_scanner.HUB_SOURCE} == {HUB_SOURCE}
    published = {
        directory_store.PUBLISHED,
        directory_store.RETIRED,
        anomaly_announcer.DETECTED,
        anomaly_announcer.WITHDRAWN,
        clock_scanner.RAISED,
        clock_scanner.WITHDRAWN,
    }
    for event_type in published:
        assert LOG(typed_event(event_type, HUB_SOURCE, subject=UNIT)) is None, event_type


def test_the_hub_is_admitted_only_on_the_log_and_only_its_own_types() -> None:
    hub_alert = typed_event(TYPE_PREFIX + "alert.raised.v1", HUB_SOURCE)
    assert LOG(hub_alert) is None
    refusal = GATEWAY.check(hub_alert)
    assert refusal is not None
    assert refusal.reason == "unknown_source"
    hub_case = typed_event(FILED, HUB_SOURCE)
    refusal = LOG(hub_case)
    assert refusal is not None
    assert (refusal.reason, refusal.field) == ("type_not_permitted", "type")


def test_an_acknowledgement_is_admitted_on_the_log_only_as_the_acknowledging_unit() -> None:
    mine = typed_event(ACKNOWLEDGED, UNIT, by_unit=UNIT)
    assert LOG(mine) is None
    forged = typed_event(ACKNOWLEDGED, UNIT, by_unit=OTHER_OFFICE)
    refusal = LOG(forged)
    assert refusal is not None
    assert (refusal.reason, refusal.field) == ("forged_source", "data.by_unit")
    # Through the gateway no unit is granted alert.*: acknowledging goes through the API's check.
    refusal = GATEWAY.check(mine, publisher=UNIT)
    assert refusal is not None
    assert refusal.reason == "type_not_permitted"


def _granted_unit(event_type: str) -> tuple[str, str] | None:
    """A unit the directory grants `event_type`, and a township it covers."""
    for unit in sorted(DIRECTORY.units.values(), key=lambda u: u.id):
        if unit.may_publish(event_type) and unit.jurisdiction:
            return unit.id, sorted(unit.jurisdiction)[0]
    return None


@pytest.mark.parametrize("event_type", sorted(CATALOG.kinds))
def test_every_type_is_admitted_from_a_unit_the_directory_grants_it_or_from_the_hub(event_type: str) -> None:
    granted = _granted_unit(event_type)
    if granted is None:
        source, township = HUB_SOURCE, "shilou"
        assert (
            any(p.split(".")[0] == event_type.split(".")[3] for p in HUB_PUBLISHES)
            or event_type == ACKNOWLEDGED
        )
    else:
        source, township = granted
    kind = CATALOG.get(event_type)
    raw = sample_data(
        kind.latest, SampleContext(township=township, unit=UNIT if source == HUB_SOURCE else source)
    )
    if event_type == ACKNOWLEDGED:
        source, raw["by_unit"] = UNIT, UNIT
    data = from_json(kind.latest, raw, "data", DIRECTORY.knows)
    event = Envelope(str(uuid7()), event_type, source, "G-1", datetime.now(UTC), data)
    assert LOG(event) is None


# --- the SDK ----------------------------------------------------------------------------------------


async def test_the_sdk_refuses_to_publish_an_event_it_is_not_granted_and_sends_none_of_the_batch() -> None:
    # A closed port: had the client tried to publish, it would fail with BrokerUnavailable instead.
    client = LiandongClient(f"127.0.0.1:{free_port()}", unit=UNIT)
    good = case_event("filed", "G-SDK-1")
    started = time.monotonic()
    async with client:
        for bad, reason in (
            (case_event("filed", "G-SDK-2", source=OTHER_OFFICE), "forged_source"),
            (
                case_event("filed", "G-SDK-3", data={**good.data, "township": "nancun"}),
                "township_not_permitted",
            ),
        ):
            with pytest.raises(InvalidEvent) as info:
                await client.publish(good, bad)
            assert info.value.reason == reason
    assert time.monotonic() - started < 5, "the refusal came before any broker round trip"


def test_the_sdk_builder_names_the_grant_refused() -> None:
    client = LiandongClient("127.0.0.1:1", unit=UNIT)
    data = {k: v for k, v in sample_data(CATALOG.get(FILED).latest).items()}
    data["township"] = "nancun"
    with pytest.raises(InvalidEvent) as info:
        client.event("case.filed.v1", subject="G-SDK-4", data=data)
    assert info.value.reason == "township_not_permitted"
    assert info.value.problems[0][0] == "data.township"


# --- the importer ----------------------------------------------------------------------------------


@dataclass
class PermissiveClient:
    """A `CaseClient` that checks nothing: the importer must not rely on its client for grants."""

    unit: str
    published: list[Envelope] = field(default_factory=list)

    def event(
        self,
        short_type: str,
        *,
        subject: str,
        data: dict[str, Any],
        record_id: str | None = None,
        time: datetime | None = None,
    ) -> Envelope:
        return Envelope(
            str(uuid7()), TYPE_PREFIX + short_type, self.unit, subject, time or datetime.now(UTC), data
        )

    async def publish(self, *events: Envelope) -> None:
        self.published.extend(events)


async def test_the_importer_reports_and_dead_letters_a_row_its_unit_is_not_granted(tmp_path: Path) -> None:
    headers = ["案件编号", "立案日期", "镇街", "案件类型", "案件名称", "当事人", "立案文号", "是否重大案件"]
    rows = [
        ["SL-G-0001", "2026-11-28", "石楼", "违法建设", "未批先建", "张三", "", "否"],
        ["SL-G-0002", "2026-11-28", "南村", "违法建设", "不属本单位辖区", "", "", "否"],
    ]
    path = tmp_path / "cases.csv"
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(headers)
        writer.writerows(rows)
    dead: list[tuple[bytes, str, str]] = []

    async def dead_letter(original: bytes, reason: str, detail: str, key: bytes) -> None:
        dead.append((original, reason, detail))

    client = PermissiveClient(UNIT)
    options = ImportOptions(
        path=path,
        unit=UNIT,
        report_path=tmp_path / "report.csv",
        state_path=tmp_path / "state.json",
        progress=io.StringIO(),
    )
    result = await run(
        options, client, ColumnMapping.load(DIRECTORY), Health("spreadsheet", "inbound"), dead_letter
    )

    assert [e.subject for e in client.published] == ["SL-G-0001"]
    assert [reason for _, reason, _ in dead] == ["township_not_permitted"]
    assert "nancun" in dead[0][2]
    assert [(p.row, p.column) for p in result.problems] == [(3, "镇街")]
    with (tmp_path / "report.csv").open(encoding="utf-8-sig", newline="") as f:
        report = list(csv.DictReader(f))
    assert [r["row"] for r in report] == ["3"]
    assert "not granted" in report[0]["reason"]


# --- the worker's gate, in the projector --------------------------------------------------------------


@pytest.fixture
async def engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(pg_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def codec() -> EventCodec:
    codec = EventCodec(CATALOG, LocalSchemaRegistry())
    await codec.prepare()
    return codec


def hub_projector(engine: AsyncEngine, codec: EventCodec, dead: ListDeadLetters, gated: bool) -> Projector:
    from events.clock_rules import ClockRules
    from events.mechanisms import Mechanisms
    from projections.hub import hub_projections

    return Projector(
        engine,
        "hub",
        codec,
        hub_projections(Mechanisms.load(), ClockRules.load(), CALENDAR, CLOCK_SETTINGS),
        dead,
        SettableIncarnation(),
        gate=LOG if gated else None,
    )


async def stored_ids(engine: AsyncEngine, ids: Sequence[str]) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(event_history.c.event_id).where(event_history.c.event_id.in_(ids)))
        return {r.event_id for r in rows}


async def test_the_gate_dead_letters_what_the_directory_does_not_grant_and_projects_the_rest(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    permitted = case_event("filed", "G-P-1")
    refused = {
        "township_not_permitted": case_event("filed", "G-P-2", source=OTHER_OFFICE),
        "unknown_source": case_event("filed", "G-P-3", source="forged.office"),
        "type_not_permitted": case_event("filed", "G-P-4", source=POLICE),
    }
    hub_events = [
        typed_event(TYPE_PREFIX + "directory.unit_published.v1", HUB_SOURCE, subject=UNIT),
        typed_event(TYPE_PREFIX + "anomaly.detected.v1", HUB_SOURCE, subject="AN-G-1"),
        typed_event(ACKNOWLEDGED, UNIT, subject="CLK-G-1", by_unit=UNIT),
    ]
    events = [permitted, *refused.values(), *hub_events]
    dead = ListDeadLetters()

    result = await hub_projector(engine, codec, dead, gated=True).process(records(codec, events))

    assert sorted(reason for _, reason, _ in dead.sent) == sorted(refused)
    for record, reason, detail in dead.sent:
        assert dict(record.headers)["ce_id"].decode() == refused[reason].id
        assert detail.split(":", 1)[0] in ("source", "type", "data.township")
    assert result.dead_lettered == dict.fromkeys(refused, 1)
    admitted = [permitted, *hub_events]
    assert await stored_ids(engine, [e.id for e in events]) == {e.id for e in admitted}
    async with engine.connect() as conn:
        case_ids = set(
            (await conn.execute(select(cases.c.case_id).where(cases.c.case_id.like("G-P-%")))).scalars()
        )
    assert case_ids == {"G-P-1"}


async def test_without_the_gate_the_same_forged_record_would_have_been_projected(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    forged = case_event("filed", "G-N-1", source=OTHER_OFFICE)
    dead = ListDeadLetters()

    await hub_projector(engine, codec, dead, gated=False).process(records(codec, [forged]))

    assert dead.sent == []
    assert await stored_ids(engine, [forged.id]) == {forged.id}


# --- the worker process, with records published straight to the broker ------------------------------


async def publish_straight(bootstrap: str, codec: EventCodec, events: Sequence[Envelope]) -> None:
    publisher = KafkaPublisher(bootstrap, partitions=3)
    try:
        await publisher.publish([(topic_for(e.area), codec.encode(e)) for e in events])
    finally:
        await publisher.close()


async def worker_metric(port: int, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_the_worker_dead_letters_a_forged_record_published_straight_to_the_broker(
    fresh_broker: EmbeddedBroker, engine: AsyncEngine, codec: EventCodec, workers: Workers
) -> None:
    bootstrap = fresh_broker.bootstrap
    permitted = case_event("filed", "G-W-1")
    forged = case_event("filed", "G-W-2", source=OTHER_OFFICE)  # a township it does not cover
    impostor = case_event("filed", "G-W-3", source="forged.office")
    await publish_straight(bootstrap, codec, [forged, impostor, permitted])
    _, port = workers.start(bootstrap)

    async def permitted_projected() -> bool:
        workers.assert_running()
        return permitted.id in await stored_ids(engine, [permitted.id])

    await wait_for(permitted_projected, 90, "the worker to project the permitted event")

    async def two_dead_letters() -> list[Any] | None:
        dead = await topic_records(bootstrap, DEAD_LETTER_TOPIC)
        return dead if len(dead) >= 2 else None

    dead = await wait_for(two_dead_letters, 30, "two records on the dead-letter topic")
    by_id = {dict(r.headers)["ce_id"].decode(): dict(r.headers) for r in dead}
    # Exactly the two refused records: the directory the worker published itself passed the gate.
    assert set(by_id) == {forged.id, impostor.id}
    assert by_id[forged.id]["liandong_dlq_reason"] == b"township_not_permitted"
    assert by_id[impostor.id]["liandong_dlq_reason"] == b"unknown_source"
    assert await stored_ids(engine, [forged.id, impostor.id]) == set()
    async with engine.connect() as conn:
        directory_events = await conn.scalar(
            select(event_history.c.event_id).where(event_history.c.source == HUB_SOURCE).limit(1)
        )
    assert directory_events is not None, "the hub's own directory events were projected"
    assert (
        await worker_metric(port, "liandong_events_dead_lettered_total", reason="township_not_permitted") == 1
    )
