"""SQL-, HTML-, formula-, Unicode-, control- and length-shaped strings in every text field of every
event type, through the real gateway, the projector (with the worker's gate), and back out of the
API as JSON, CSV and the public Atom feed.

Each payload kind is one batch per publishing unit. The text comes back verbatim (no injection, no
escaping applied to the stored value), JSON stays JSON and never HTML, the Atom feed stays
well-formed XML, CSV cells that a spreadsheet would run as a formula are guarded, and nothing is
dead-lettered. Text the store or its readers cannot keep (U+0000 and other C0 controls, identifiers
wider than their columns) is refused by the gateway: tests/fuzz/test_fuzz_gateway.py.
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI
from sqlalchemy import func, select

from events.catalog import Catalog, EventKind, topic_for
from events.directory import Directory
from events.envelope import TYPE_PREFIX
from events.grants import Grants
from events.ids import uuid7
from events.jsonavro import MAX_STRING
from events.masking import mask_text
from events.registry import LocalSchemaRegistry
from events.samples import SampleContext, sample_data
from events.serde import EventCodec
from events.storable import BOUNDED_FIELDS
from projections.db import make_engine
from projections.migrate import upgrade
from projections.runtime import Projector, SourceRecord
from projections.schema import event_history
from services.api.app import create_app
from services.embedded_broker import EmbeddedBroker
from services.keys import issue_key
from services.settings import Settings
from tests.projector_kit import CALENDAR, CLOCK_SETTINGS, ListDeadLetters, SettableIncarnation
from tests.support import reader_headers, wait_for

pytestmark = pytest.mark.integration

CATALOG = Catalog.load()
DIRECTORY = Directory.load()
BATCH = "application/cloudevents-batch+json"
WITHDRAWN = TYPE_PREFIX + "case.publication_withdrawn.v1"
MAX_BATCH_BYTES = 900_000  # under the gateway's 1 MiB

PAYLOADS: dict[str, str] = {
    "sql": "'; DROP TABLE cases; -- 1' OR '1'='1\" /* */ UNION SELECT * FROM api_keys",
    "html": "<script>alert('x')</script><img src=x onerror=alert(1)>\"'><svg/onload=alert(1)>&amp;&lt;",
    "formula": '=HYPERLINK("http://evil.example","点击")',
    "unicode": "𠮷野家 👨‍👩‍👧 ﷽ é e\u0301 \u200b\ufeff 全角ＡＢＣ",
    "rtl": "\u202egnp.exe \u2067שלום مرحبا\u2069 \u200f",
    "whitespace": "tab\there\nline\r\nbreak   ",
    "long": "长" * 1000,
}


@dataclass(frozen=True)
class Publisher:
    unit: str
    township: str
    types: tuple[str, ...]


def publishers() -> list[Publisher]:
    """Units that, together, may publish every type a unit can publish (not the hub's own)."""
    left = {t for t in CATALOG.kinds if any(u.may_publish(t) for u in DIRECTORY.units.values())}
    chosen: list[Publisher] = []
    while left:
        unit = max(
            sorted(DIRECTORY.units.values(), key=lambda u: u.id),
            key=lambda u: (sum(u.may_publish(t) for t in left), "shilou" in u.jurisdiction),
        )
        mine = tuple(sorted(t for t in left if unit.may_publish(t)))
        township = "shilou" if "shilou" in unit.jurisdiction else sorted(unit.jurisdiction)[0]
        chosen.append(Publisher(unit.id, township, mine))
        left -= set(mine)
    return chosen


PUBLISHERS = publishers()


def _fill(schema: Any, value: Any, payload: str) -> Any:
    """`value` (sample data for `schema`) with every free-text string replaced by `payload`, cut to
    the width of the field where the store bounds it."""
    if isinstance(schema, dict) and schema.get("type") == "record":
        out = dict(value)
        for f in schema["fields"]:
            name = f["name"]
            if name not in out or out[name] is None:
                continue
            if f.get("liandong.ref"):
                continue  # a township or unit id, checked against the directory
            branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
            if "string" in branches:
                out[name] = payload[: BOUNDED_FIELDS.get(name, len(payload))]
            else:
                typed = next((b for b in branches if b != "null"), None)
                out[name] = _fill(typed, out[name], payload)
        return out
    if isinstance(schema, dict) and schema.get("type") == "array" and isinstance(value, list):
        return [_fill(schema["items"], v, payload) for v in value]
    return value


def hostile_event(kind: EventKind, publisher: Publisher, payload: str, subject: str) -> dict[str, Any]:
    ctx = SampleContext(township=publisher.township, unit=publisher.unit)
    data = _fill(kind.latest, sample_data(kind.latest, ctx), payload)
    return {
        "specversion": "1.0",
        "id": str(uuid7()),
        "source": publisher.unit,
        "type": kind.type,
        "subject": subject,
        "time": "2026-11-28T10:00:00+08:00",
        "datacontenttype": "application/json",
        "data": data,
    }


def batches(events: list[dict[str, Any]]) -> list[bytes]:
    out: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for event in events:
        encoded = json.dumps(event, ensure_ascii=False).encode()
        if current and size + len(encoded) > MAX_BATCH_BYTES:
            out.append(b"[" + b",".join(current) + b"]")
            current, size = [], 0
        current.append(encoded)
        size += len(encoded) + 1
    if current:
        out.append(b"[" + b",".join(current) + b"]")
    return out


@dataclass
class Hub:
    app: FastAPI
    client: httpx.AsyncClient
    keys: dict[str, str]
    reader: dict[str, str]
    url: str


@pytest.fixture
async def hub(fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path) -> AsyncIterator[Hub]:
    engine = make_engine(pg_url)
    try:
        await upgrade(engine)
        keys = {p.unit: await issue_key(engine, DIRECTORY, p.unit) for p in PUBLISHERS}
    finally:
        await engine.dispose()
    env = {
        "LIANDONG_DATA_DIR": str(tmp_path),
        "LIANDONG_DATABASE_URL": pg_url,
        "LIANDONG_RATE_LIMIT_BURST": "100000",
    }
    app = create_app(Settings.from_env(env), fresh_broker.bootstrap)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://hub") as client,
    ):
        yield Hub(app, client, keys, await reader_headers(pg_url), pg_url)


async def project_everything(bootstrap: str, url: str) -> tuple[int, ListDeadLetters]:
    """Every record on the catalog's topics, through the worker's projector and gate."""
    from events.clock_rules import ClockRules
    from events.mechanisms import Mechanisms
    from projections.hub import hub_projections

    codec = EventCodec(CATALOG, LocalSchemaRegistry())
    await codec.prepare()
    engine = make_engine(url)
    dead = ListDeadLetters()
    projector = Projector(
        engine,
        "hub",
        codec,
        hub_projections(Mechanisms.load(), ClockRules.load(), CALENDAR, CLOCK_SETTINGS),
        dead,
        SettableIncarnation(),
        gate=Grants(DIRECTORY, CATALOG, hub_issued=True),
    )
    try:
        records = await all_records(bootstrap, sorted({topic_for(k.family) for k in CATALOG}))
        await projector.process(records)
    finally:
        await engine.dispose()
    return len(records), dead


async def all_records(bootstrap: str, topics: list[str]) -> list[SourceRecord]:
    """Every record of the topics that exist, with one consumer, from the start to the end offsets."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        existing = await consumer.topics()
        parts = [
            TopicPartition(t, p)
            for t in topics
            if t in existing
            for p in consumer.partitions_for_topic(t) or ()
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(parts)
        out: list[SourceRecord] = []

        async def caught_up() -> bool:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(
                    SourceRecord(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, list(r.headers))
                    for r in batch
                )
            return all([await consumer.position(p) >= ends[p] for p in parts])

        await wait_for(caught_up, 30, "the end of the catalog's topics")
        return out
    finally:
        await consumer.stop()


def assert_not_markup(response: httpx.Response) -> None:
    assert "html" not in response.headers.get("content-type", ""), response.headers


async def test_hostile_text_in_every_field_is_stored_and_served_verbatim(
    hub: Hub, fresh_broker: EmbeddedBroker
) -> None:
    sent: list[str] = []
    case_subjects: dict[str, str] = {}
    for name, payload in PAYLOADS.items():
        assert mask_text(payload) == payload, "the payloads hold nothing the public feed would mask"
        case_subject = f"HS-{name}-{uuid7().hex[:8]}"
        case_subjects[name] = case_subject
        for publisher in PUBLISHERS:
            events = []
            for event_type in publisher.types:
                kind = CATALOG.get(event_type)
                # The case's events share one subject, so the case can be published and read back
                # (all but the withdrawal of its publication).
                shared = kind.family == "case" and kind.type != WITHDRAWN
                subject = case_subject if shared else f"HS-{name}-{uuid7().hex[:12]}"
                events.append(hostile_event(kind, publisher, payload, subject))
            if name == "long" and TYPE_PREFIX + "case.filed.v1" in publisher.types:
                longest = hostile_event(
                    CATALOG.get(TYPE_PREFIX + "case.filed.v1"), publisher, "x", "HS-LONGEST-1"
                )
                longest["data"]["title"] = "x" * MAX_STRING
                events.append(longest)
            for body in batches(events):
                response = await hub.client.post(
                    "/v1/events",
                    content=body,
                    headers={"Authorization": f"Bearer {hub.keys[publisher.unit]}", "Content-Type": BATCH},
                )
                assert response.status_code == 202, (name, publisher.unit, response.text[:800])
            sent += [e["id"] for e in events]

    projected, dead = await project_everything(fresh_broker.bootstrap, hub.url)

    assert dead.sent == [], [(reason, detail) for _, reason, detail in dead.sent]
    assert projected == len(sent)
    engine = make_engine(hub.url)
    try:
        async with engine.connect() as conn:
            stored = await conn.scalar(
                select(func.count()).select_from(event_history).where(event_history.c.event_id.in_(sent))
            )
    finally:
        await engine.dispose()
    assert stored == len(sent), "every hostile event was projected"

    for name, payload in PAYLOADS.items():
        detail = await hub.client.get(f"/v1/cases/{case_subjects[name]}", headers=hub.reader)
        assert detail.status_code == 200, detail.text[:500]
        assert detail.headers["content-type"].startswith("application/json")
        case = detail.json()
        assert case["title"] == payload, name
        assert case["case_number"] == payload[: BOUNDED_FIELDS["case_number"]], name
        # The full-process record carries the same text: one JSON document, parsed as such above.
        assert case["events"], name

    longest_case = await hub.client.get("/v1/cases/HS-LONGEST-1", headers=hub.reader)
    assert longest_case.status_code == 200
    assert longest_case.json()["title"] == "x" * MAX_STRING

    listing = await hub.client.get(
        "/v1/cases", params={"format": "csv", "township": "shilou"}, headers=hub.reader
    )
    assert listing.status_code == 200, listing.text[:500]
    assert_not_markup(listing)
    rows = list(csv.reader(io.StringIO(listing.content.decode("utf-8-sig"))))
    header = rows[0]
    title_at = next(i for i, label in enumerate(header) if label.endswith("Title"))
    id_at = next(i for i, label in enumerate(header) if label.endswith("Case id"))
    titles = {row[id_at]: row[title_at] for row in rows[1:]}
    for name, payload in PAYLOADS.items():
        guarded = "'" + payload if payload.startswith(("=", "+", "-", "@", "\t", "\r")) else payload
        assert titles[case_subjects[name]] == guarded, name

    feed = await hub.client.get("/v1/publications.atom")
    assert feed.status_code == 200
    assert_not_markup(feed)
    atom = "{http://www.w3.org/2005/Atom}"
    root = ET.fromstring(feed.content)  # well-formed XML, whatever the titles hold
    titles_in_feed = {e.findtext(f"{atom}title") for e in root.iter(f"{atom}entry")}
    for name, payload in PAYLOADS.items():
        expected = f"{payload[: BOUNDED_FIELDS['case_number']]} {payload}".strip()
        # XML normalises a carriage return to a line feed on reading: that is XML, not the hub.
        assert expected.replace("\r\n", "\n").replace("\r", "\n") in titles_in_feed, name
