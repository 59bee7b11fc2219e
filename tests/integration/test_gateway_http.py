"""The ingest contract over real HTTP: the real app, a real Tansu broker, a real PostgreSQL.

The app runs in-process behind httpx's ASGI transport, with its lifespan, so that every request
goes through routing, authentication, validation, Avro encoding and an acks=all publish.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from events.catalog import Catalog
from events.directory import Directory
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections.db import make_engine
from projections.migrate import upgrade
from services.api.app import create_app
from services.keys import issue_key
from services.settings import Settings
from tests.support import case_event, cloudevent_json, wait_for

pytestmark = pytest.mark.integration

UNIT = "shilou.enforcement-office"
OTHER_UNIT = "shiqiao.enforcement-office"
FILED = "cn.gov.liandong.case.filed.v1"
TOPIC = "liandong.case.events"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
PROBLEM_JSON = "application/problem+json"
MIB = 1024 * 1024


@dataclass
class Hub:
    app: FastAPI
    client: httpx.AsyncClient
    key: str

    async def post(
        self,
        body: Any,
        content_type: str = STRUCTURED,
        authorization: str | None = "",
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        """POST /v1/events; `authorization=""` sends the hub's own key, None sends no header."""
        headers = {"Content-Type": content_type}
        if authorization is not None:
            headers["Authorization"] = authorization or f"Bearer {self.key}"
        content = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        return await (client or self.client).post("/v1/events", content=content, headers=headers)


@asynccontextmanager
async def running_hub(bootstrap: str, pg_url: str, data_dir: Path) -> AsyncIterator[Hub]:
    engine = make_engine(pg_url)
    try:
        await upgrade(engine)
        key = await issue_key(engine, Directory.load(), UNIT)
    finally:
        await engine.dispose()
    settings = Settings.from_env({"LIANDONG_DATA_DIR": str(data_dir), "LIANDONG_DATABASE_URL": pg_url})
    app = create_app(settings, bootstrap)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://hub") as client,
    ):
        yield Hub(app=app, client=client, key=key)


@pytest.fixture
async def hub(broker: str, pg_url: str, tmp_path: Path) -> AsyncIterator[Hub]:
    async with running_hub(broker, pg_url, tmp_path) as running:
        yield running


def event(kind: str = "filed", subject: str = "SL-2026-0001", **attrs: Any) -> dict[str, Any]:
    doc = cloudevent_json(case_event(kind, subject))
    doc.update(attrs)
    return doc


async def records_with_ids(bootstrap: str, ids: Iterable[str], timeout_s: float = 20.0) -> dict[str, Any]:
    """Read TOPIC from the beginning, without a group, until a record for every id was seen."""
    wanted = set(ids)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:

        async def partitions() -> set[int] | None:
            parts: set[int] | None = consumer.partitions_for_topic(TOPIC)
            return parts

        parts = await wait_for(partitions, 10, f"partitions of {TOPIC}")
        consumer.assign([TopicPartition(TOPIC, p) for p in sorted(parts)])
        await consumer.seek_to_beginning()
        found: dict[str, ConsumerRecord[bytes, bytes]] = {}
        deadline = time.monotonic() + timeout_s
        while wanted - found.keys():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"records {sorted(wanted - found.keys())} not on {TOPIC} in {timeout_s}s"
                )
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                for record in batch:
                    ce_id = dict(record.headers).get("ce_id", b"").decode()
                    if ce_id in wanted:
                        found[ce_id] = record
        return found
    finally:
        await consumer.stop()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metric_samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of one sample, or None when the series was never created."""
    return samples.get((name, frozenset(labels.items())))


def assert_problem(response: httpx.Response, status: int, reason: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert {"type", "title", "title_zh", "status"} <= body.keys()
    assert body["status"] == status
    assert body["title"]
    assert body["title_zh"]
    if reason is not None:
        assert body["type"] == f"urn:liandong:problem:{reason.replace('_', '-')}"
    return body


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- accepted -----------------------------------------------------------------------------------


async def test_a_valid_event_is_answered_202_and_lands_on_the_broker_in_wire_format(
    hub: Hub, broker: str
) -> None:
    doc = event(subject="SL-HTTP-0001", time="2026-11-29T10:00:00+08:00")

    response = await hub.post(doc)

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1}
    record = (await records_with_ids(broker, [doc["id"]]))[doc["id"]]
    assert record.key == b"SL-HTTP-0001"
    catalog = Catalog.load()
    assert record.value[0] == 0x00
    assert int.from_bytes(record.value[1:5], "big") == LocalSchemaRegistry.id_for(catalog.get(FILED).latest)
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == doc["id"].encode()
    assert headers["ce_source"] == UNIT.encode()
    assert headers["ce_type"] == FILED.encode()
    assert headers["ce_subject"] == b"SL-HTTP-0001"
    assert headers["ce_time"] == b"2026-11-29T02:00:00+00:00"
    assert headers["content-type"] == b"application/avro"
    codec = EventCodec(catalog, LocalSchemaRegistry())
    await codec.prepare()
    decoded = codec.decode(record.value, record.headers)
    assert (decoded.id, decoded.type, decoded.source, decoded.subject) == (
        doc["id"],
        FILED,
        UNIT,
        "SL-HTTP-0001",
    )
    assert decoded.time == datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
    # Revision 2 of case.filed added optional fields; decoding fills them with their defaults.
    sent = doc["data"]
    assert {k: v for k, v in decoded.data.items() if k in sent} == sent
    defaults = {f["name"]: f["default"] for f in catalog.get(FILED).latest["fields"] if "default" in f}
    assert {k: v for k, v in decoded.data.items() if k not in sent} == {
        k: v for k, v in defaults.items() if k not in sent
    }


async def test_a_valid_batch_of_three_is_answered_202_with_the_count(hub: Hub, broker: str) -> None:
    docs = [event("filed", "SL-HTTP-0002"), event("decided", "SL-HTTP-0002"), event("closed", "SL-HTTP-0002")]

    response = await hub.post(docs, BATCH)

    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 3}
    found = await records_with_ids(broker, [d["id"] for d in docs])
    assert {dict(r.headers)["ce_type"].decode() for r in found.values()} == {d["type"] for d in docs}


# --- refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param(lambda key: "Basic c2hpbG91OnNlY3JldA==", id="basic-scheme"),
        pytest.param(lambda key: "Bearer", id="bearer-without-key"),
        pytest.param(lambda key: key, id="key-without-scheme"),
        pytest.param(lambda key: "Bearer not-a-liandong-key", id="malformed-key"),
        pytest.param(lambda key: "Bearer ld_0123456789ab_c2VjcmV0c2VjcmV0", id="unknown-key-id"),
        pytest.param(lambda key: f"Bearer {key.rsplit('_', 1)[0]}_wrong-secret", id="wrong-secret"),
    ],
)
async def test_a_request_without_a_valid_key_is_answered_401(
    hub: Hub, authorization: Callable[[str], str] | None
) -> None:
    header = None if authorization is None else authorization(hub.key)

    response = await hub.post(event(), authorization=header)

    body = assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"
    assert body["errors"][0]["field"] == "Authorization"


async def test_an_event_with_another_units_source_is_answered_403_naming_source(hub: Hub) -> None:
    response = await hub.post(event(source=OTHER_UNIT))

    body = assert_problem(response, 403, "forged_source")
    assert body["errors"][0]["field"] == "source"
    assert OTHER_UNIT in body["detail"]


def _bad_township() -> dict[str, Any]:
    doc = event()
    return {**doc, "data": {**doc["data"], "township": "nowhere"}}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason", "field"),
    [
        pytest.param(b'{"specversion": "1.0",', STRUCTURED, 400, "malformed_json", "body", id="malformed"),
        pytest.param(
            json.dumps(event(), ensure_ascii=False).encode("gbk"),
            STRUCTURED,
            400,
            "malformed_json",
            "body",
            id="not-utf8",
        ),
        pytest.param([event()], STRUCTURED, 400, "malformed_event", "body", id="not-an-object"),
        pytest.param(event(), BATCH, 400, "malformed_batch", "body", id="not-an-array"),
        pytest.param([], BATCH, 400, "empty_batch", "body", id="empty-batch"),
        pytest.param(event(), "application/json", 415, "unsupported_media_type", "Content-Type", id="json"),
        pytest.param(b" " * (MIB + 1), STRUCTURED, 413, "too_large", "body", id="oversize-body"),
        pytest.param([{}] * 1001, BATCH, 413, "too_large", "body", id="too-many-events"),
        pytest.param(_bad_township(), STRUCTURED, 422, "invalid_event", "data.township", id="bad-data"),
        pytest.param(event(type="x.y"), STRUCTURED, 422, "invalid_event", "type", id="unknown-type"),
        pytest.param(event(time="2026-11-29T10:00"), STRUCTURED, 422, "invalid_event", "time", id="time"),
        pytest.param(event(source=OTHER_UNIT), STRUCTURED, 403, "forged_source", "source", id="forged"),
    ],
)
async def test_each_refusal_is_answered_with_problem_json_naming_the_field(
    hub: Hub, body: Any, content_type: str, status: int, reason: str, field: str
) -> None:
    response = await hub.post(body, content_type)

    problem = assert_problem(response, status, reason)
    assert problem["errors"][0]["field"] == field
    assert problem["detail"]


async def test_a_bad_event_in_a_batch_is_answered_422_with_its_index_and_nothing_is_accepted(
    hub: Hub,
) -> None:
    docs = [event(subject="SL-HTTP-0003"), {**event(subject="SL-HTTP-0004"), "subject": "no spaces"}]

    response = await hub.post(docs, BATCH)

    problem = assert_problem(response, 422, "invalid_event")
    assert problem["errors"] == [{"field": "subject", "reason": problem["errors"][0]["reason"], "index": 1}]
    metrics = metric_samples((await hub.client.get("/metrics")).text)
    assert sample(metrics, "liandong_events_accepted_total", type=FILED) is None
    assert sample(metrics, "liandong_events_rejected_total", type=FILED, reason="invalid_event") == 1


async def test_an_oversize_body_streamed_without_content_length_is_answered_413(hub: Hub) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(17):
            yield b" " * (64 * 1024)

    response = await hub.client.post(
        "/v1/events",
        content=chunks(),
        headers={"Authorization": f"Bearer {hub.key}", "Content-Type": STRUCTURED},
    )

    problem = assert_problem(response, 413, "too_large")
    assert problem["errors"][0]["field"] == "body"


@pytest.mark.parametrize(
    ("attrs", "field"),
    [
        pytest.param({"time": "0001-01-01T00:00:00+08:00"}, "time", id="time-out-of-range"),
        pytest.param({"subject": "SL-2026-0001\n"}, "subject", id="subject-trailing-newline"),
    ],
)
async def test_an_event_the_validator_lets_through_wrongly_is_answered_422_problem_json(
    hub: Hub, attrs: dict[str, Any], field: str
) -> None:
    transport = httpx.ASGITransport(app=hub.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        response = await hub.post(event(**attrs), client=client)

    problem = assert_problem(response, 422, "invalid_event")
    assert problem["errors"][0]["field"] == field


async def test_a_lone_surrogate_in_data_is_answered_422_problem_json(hub: Hub) -> None:
    body = json.dumps(event()).encode().replace(b'"title": "', b'"title": "\\ud800', 1)
    transport = httpx.ASGITransport(app=hub.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        response = await hub.post(body, client=client)

    problem = assert_problem(response, 422, "invalid_event")
    assert problem["errors"][0]["field"] == "data.title"


# --- metrics ------------------------------------------------------------------------------------


async def test_the_metrics_count_accepted_and_rejected_events_by_type_and_reason(hub: Hub) -> None:
    assert (await hub.post(event(subject="SL-HTTP-0005"))).status_code == 202
    assert (await hub.post(event(subject="SL-HTTP-0006"))).status_code == 202
    assert (await hub.post(b"{oops", STRUCTURED)).status_code == 400
    assert (await hub.post(event(source=OTHER_UNIT))).status_code == 403
    assert (await hub.post(_bad_township())).status_code == 422
    assert (await hub.post(event(), authorization=None)).status_code == 401

    response = await hub.client.get("/metrics")

    assert response.status_code == 200
    samples = metric_samples(response.text)
    assert sample(samples, "liandong_events_accepted_total", type=FILED) == 2
    rejected = "liandong_events_rejected_total"
    assert sample(samples, rejected, type="unknown", reason="malformed_json") == 1
    assert sample(samples, rejected, type=FILED, reason="forged_source") == 1
    assert sample(samples, rejected, type=FILED, reason="invalid_event") == 1
    assert sample(samples, rejected, type="unknown", reason="unauthenticated") == 1


# --- broker down --------------------------------------------------------------------------------


async def test_an_unreachable_broker_is_answered_503_and_nothing_is_accepted(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_hub(f"127.0.0.1:{closed_port()}", pg_url, tmp_path) as down:
        started = time.monotonic()
        response = await down.post(event(subject="SL-HTTP-0007"))
        elapsed = time.monotonic() - started
        metrics = metric_samples((await down.client.get("/metrics")).text)

    problem = assert_problem(response, 503, "broker_unavailable")
    assert problem["errors"][0]["field"] == "broker"
    assert "127.0.0.1" not in response.text, "the broker's address is for the operator's log only"
    assert response.headers["retry-after"] == "5"
    assert elapsed < 12, f"the 503 took {elapsed:.1f}s"
    assert sample(metrics, "liandong_events_rejected_total", type=FILED, reason="broker_unavailable") == 1
    assert sample(metrics, "liandong_events_accepted_total", type=FILED) is None


# --- queries ------------------------------------------------------------------------------------


async def test_listing_cases_of_an_unknown_township_is_answered_400_naming_township(hub: Hub) -> None:
    auth = {"Authorization": f"Bearer {hub.key}"}
    response = await hub.client.get("/v1/cases", params={"township": "nowhere"}, headers=auth)

    problem = assert_problem(response, 400, "invalid_query")
    assert problem["errors"][0]["field"] == "township"


async def test_an_unknown_case_is_answered_404_problem(hub: Hub) -> None:
    response = await hub.client.get("/v1/cases/unknown", headers={"Authorization": f"Bearer {hub.key}"})

    assert_problem(response, 404, "not_found")
