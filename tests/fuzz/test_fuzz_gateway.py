"""The gateway under hostile input: generated JSON, near-valid CloudEvents with one field broken,
oversize and deeply nested bodies, invalid UTF-8, times far in the future.

Nothing crashes, leaks a stack trace, or publishes part of a request: every answer is 202, or a
4xx `application/problem+json` naming the field (503 only when the broker is down, tested in
tests/integration/test_gateway_http.py). Whatever is accepted can be encoded and stored.
The parser is fuzzed alone (fast, many examples), then the real app over HTTP (real broker, real
PostgreSQL; fewer examples).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from connectors.http_gateway.ingest import BATCH, STRUCTURED, IngestRejected, Limits, parse_request
from events.catalog import Catalog, topic_for
from events.directory import Directory
from events.ids import uuid7
from events.registry import LocalSchemaRegistry
from events.samples import sample_data
from events.serde import EventCodec
from events.storable import BOUNDED_FIELDS, data_problem
from tests.integration.test_gateway_http import Hub, running_hub
from tests.support import wait_for

pytestmark = pytest.mark.integration

CATALOG = Catalog.load()
DIRECTORY = Directory.load()
LIMITS = Limits()
UNIT = "shilou.enforcement-office"
MINE = sorted(t for t in CATALOG.kinds if DIRECTORY.units[UNIT].may_publish(t))
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
REFUSALS = {400, 403, 413, 415, 422}
PROBLEM_JSON = "application/problem+json"
# What must never reach a client: a stack trace, or the name of what failed inside.
LEAKS = (
    "Traceback",
    'File "',
    "Error(",
    "Exception",
    "RecursionError",
    "KeyError",
    "TypeError",
    "AttributeError",
    "OverflowError",
    "sqlalchemy",
    "asyncpg",
    "fastavro",
)


def _codec() -> EventCodec:
    codec = EventCodec(CATALOG, LocalSchemaRegistry())
    asyncio.run(codec.prepare())
    return codec


CODEC = _codec()


def valid_event(event_type: str, subject: str = "FZ-GW-1") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid7()),
        "source": UNIT,
        "type": event_type,
        "subject": subject,
        "time": "2026-11-29T10:00:00+08:00",
        "datacontenttype": "application/json",
        "data": sample_data(CATALOG.get(event_type).latest),
    }


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
hostile_strings = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\ud800",
        "'; DROP TABLE cases; --",
        "<script>alert(1)</script>",
        "\u202eevil",
        "x" * 600,
        "9999-12-31T23:59:59+00:00",
        "0001-01-01T00:00:00+14:00",
        "2026-11-29T10:00:00+08:00",
        "shilou",
        "nancun",
        "shiqiao.enforcement-office",
        "00000000-0000-0000-0000-000000000000",
        "1" * 5000,
    ]
)


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event of a type the unit may publish, with one attribute or data field broken."""
    doc = valid_event(draw(st.sampled_from(MINE)))
    target = draw(st.sampled_from(["attribute", "data", "extra"]))
    replacement = draw(st.one_of(json_values, hostile_strings))
    if target == "attribute":
        name = draw(st.sampled_from(sorted(doc)))
        if draw(st.booleans()):
            del doc[name]
        else:
            doc[name] = replacement
    elif target == "data" and doc["data"]:
        name = draw(st.sampled_from(sorted(doc["data"])))
        if draw(st.booleans()):
            del doc["data"][name]
        else:
            doc["data"][name] = replacement
    else:
        doc[draw(st.text(max_size=12))] = replacement
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(encode),
    near_valid().map(encode),
    st.lists(near_valid(), min_size=1, max_size=3).map(encode),
)


def parse_or_refuse(content_type: str, body: bytes) -> None:
    """The property of the parser alone: envelopes that can be encoded and stored, or a refusal."""
    refusal: IngestRejected | None = None
    try:
        events = parse_request(content_type, body, UNIT, CATALOG, DIRECTORY, LIMITS, now=NOW)
    except IngestRejected as exc:
        refusal = exc
    if refusal is not None:
        event(f"refused {refusal.status} {refusal.reason}")  # --hypothesis-show-statistics
        assert refusal.status in REFUSALS
        assert refusal.problems, "every refusal names a field"
        assert all(p.field and p.reason for p in refusal.problems)
        assert not any(leak in p.reason for p in refusal.problems for leak in LEAKS[:2])
        return
    event("accepted")
    for accepted in events:
        assert data_problem(accepted.data) is None, "an accepted event holds what the store cannot keep"
        assert accepted.time <= NOW + LIMITS.max_future
        CODEC.encode(accepted)  # the API encodes after parsing: that must not fail either


@given(body=bodies, batch=st.booleans())
@example(body=b"[" * 100_000 + b"]" * 100_000, batch=True)
@example(body=b'{"a": ' + b"1" * 5000 + b"}", batch=False)
@example(body=b"[NaN]", batch=True)
@example(body=b"\xc0\xaf", batch=False)
def test_the_parser_refuses_or_accepts_anything_without_crashing(body: bytes, batch: bool) -> None:
    parse_or_refuse(BATCH if batch else STRUCTURED, body)


@given(doc=near_valid())
def test_a_near_valid_event_is_accepted_only_if_it_still_keeps_the_contract(doc: dict[str, Any]) -> None:
    parse_or_refuse(STRUCTURED, encode(doc))


def test_a_control_character_nested_in_a_record_is_named_by_its_path() -> None:
    doc = valid_event("cn.gov.liandong.case.decided.v2")
    doc["data"]["penalties"] = [{"kind": doc["data"]["penalties"][0]["kind"], "detail": "罚款\x1b[0m"}]

    with pytest.raises(IngestRejected) as info:
        parse_request(STRUCTURED, encode(doc), UNIT, CATALOG, DIRECTORY, LIMITS, now=NOW)

    assert (info.value.status, info.value.reason) == (422, "invalid_event")
    assert info.value.problems[0].field == "data.penalties[0].detail"
    assert "U+001B" in info.value.problems[0].reason


# --- over HTTP, the real app ----------------------------------------------------------------------


@pytest.fixture
async def hub(broker: str, pg_url: str, tmp_path: Path) -> AsyncIterator[Hub]:
    async with running_hub(broker, pg_url, tmp_path) as running:
        # A 500 comes back as a response (not an exception in the test), as a client would see it.
        transport = httpx.ASGITransport(app=running.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            running.client = client
            yield running


def assert_answer(response: httpx.Response) -> None:
    text = response.text
    assert response.status_code == 202 or response.status_code in REFUSALS, (response.status_code, text[:500])
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} leaked: {text[:500]}"
    if response.status_code != 202:
        assert response.headers["content-type"] == PROBLEM_JSON
        problem = response.json()
        assert problem["status"] == response.status_code
        assert problem["title"]
        assert problem["title_zh"]


@settings(max_examples=60, suppress_health_check=list(HealthCheck))
@given(body=bodies, batch=st.booleans())
async def test_generated_requests_are_answered_202_or_a_4xx_problem_never_a_5xx(
    hub: Hub, body: bytes, batch: bool
) -> None:
    response = await hub.post(body, BATCH if batch else STRUCTURED)
    assert_answer(response)


@pytest.mark.parametrize(
    ("body", "status", "reason", "field"),
    [
        pytest.param(b"[" * 200_000 + b"]" * 200_000, 400, "too_deep", "body", id="deep-array"),
        pytest.param(b'{"a":' * 5_000 + b"1" + b"}" * 5_000, 400, "too_deep", "body", id="deep-object"),
        pytest.param(
            b"\xc0\xaf\xed\xa0\x80", 400, "malformed_json", "body", id="overlong-and-surrogate-utf8"
        ),
        pytest.param(
            b'{"specversion": "1.0", "x": "\xff"}', 400, "malformed_json", "body", id="bad-byte-in-a-string"
        ),
        pytest.param(b'{"id": ' + b"9" * 5_000 + b"}", 400, "malformed_json", "body", id="huge-integer"),
        pytest.param(b'{"id": NaN}', 400, "malformed_json", "body", id="nan"),
        pytest.param(b'{"id": Infinity}', 400, "malformed_json", "body", id="infinity"),
    ],
)
async def test_hostile_bodies_are_refused_with_a_problem_naming_the_body(
    hub: Hub, body: bytes, status: int, reason: str, field: str
) -> None:
    response = await hub.post(body, STRUCTURED)

    assert_answer(response)
    problem = response.json()
    assert (response.status_code, problem["type"]) == (
        status,
        f"urn:liandong:problem:{reason.replace('_', '-')}",
    )
    assert problem["errors"][0]["field"] == field


async def test_data_nested_past_the_depth_limit_is_refused_and_within_it_is_a_data_error(hub: Hub) -> None:
    def nested(depth: int) -> dict[str, Any]:
        doc = valid_event(MINE[0])
        value: Any = "leaf"
        for _ in range(depth):
            value = {"n": value}
        doc["data"]["title"] = value
        return doc

    too_deep = await hub.post(nested(LIMITS.max_depth))
    assert_answer(too_deep)
    assert too_deep.json()["type"] == "urn:liandong:problem:too-deep"
    within = await hub.post(nested(LIMITS.max_depth - 5))
    assert_answer(within)
    assert within.status_code == 422
    assert within.json()["errors"][0]["field"] == "data.title"


async def test_a_body_over_a_mebibyte_is_refused_413_even_as_a_batch_of_small_events(hub: Hub) -> None:
    doc = valid_event(MINE[0])
    doc["data"]["title"] = "长" * 2_000  # 6 KB each, under the 64 KiB event limit
    batch = [dict(doc, id=str(uuid7())) for _ in range(200)]
    body = encode(batch)
    assert len(body) > LIMITS.max_body_bytes

    response = await hub.post(body, BATCH)

    assert_answer(response)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("ahead", "accepted"),
    [
        pytest.param(timedelta(hours=23), True, id="23-hours-ahead"),
        pytest.param(timedelta(hours=25), False, id="25-hours-ahead"),
        pytest.param(timedelta(days=36 * 365), False, id="2062-for-2026"),
    ],
)
async def test_a_time_more_than_a_day_ahead_of_the_hubs_clock_is_refused_naming_time(
    hub: Hub, ahead: timedelta, accepted: bool
) -> None:
    doc = valid_event("cn.gov.liandong.case.filed.v1", f"FZ-TIME-{uuid.uuid4().hex[:8]}")
    doc["time"] = (datetime.now(UTC) + ahead).isoformat()

    response = await hub.post(doc)

    assert_answer(response)
    if accepted:
        assert response.status_code == 202
    else:
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "time"
        assert "ahead of the hub's clock" in response.json()["errors"][0]["reason"]


@pytest.mark.parametrize(
    ("field", "value", "reason_part"),
    [
        pytest.param("title", "未批\x00先建", "U+0000", id="nul-in-free-text"),
        pytest.param("title", "未批\x1b[31m先建", "U+001B", id="escape-in-free-text"),
        pytest.param("party_name", "张三\x07", "U+0007", id="bell-in-a-name"),
        pytest.param(
            "case_number", "番" * (BOUNDED_FIELDS["case_number"] + 1), "longer than 128", id="case-number"
        ),
        pytest.param("category", "c" * (BOUNDED_FIELDS["category"] + 1), "longer than 64", id="category"),
    ],
)
async def test_text_the_store_cannot_keep_is_refused_422_naming_the_field(
    hub: Hub, field: str, value: str, reason_part: str
) -> None:
    """Found by the hostile strings: these were accepted with 202, then failed every worker batch."""
    doc = valid_event("cn.gov.liandong.case.filed.v1")
    doc["data"][field] = value

    response = await hub.post(doc)

    assert_answer(response)
    assert response.status_code == 422
    error = response.json()["errors"][0]
    assert error["field"] == f"data.{field}"
    assert reason_part in error["reason"]


async def test_a_batch_with_one_bad_event_publishes_none_of_its_events(hub: Hub, broker: str) -> None:
    subject = f"FZ-ATOMIC-{uuid.uuid4().hex[:8]}"  # one subject: one partition, in order
    good = [valid_event("cn.gov.liandong.case.filed.v1", subject) for _ in range(3)]
    bad = valid_event("cn.gov.liandong.case.filed.v1", subject)
    bad["data"]["township"] = "nancun"  # outside the unit's jurisdiction
    late = valid_event("cn.gov.liandong.case.filed.v1", subject)
    late["time"] = (datetime.now(UTC) + timedelta(days=3)).isoformat()

    for batch, status in (([*good, bad], 403), ([*good, late], 422)):
        response = await hub.post(batch, BATCH)
        assert_answer(response)
        assert response.status_code == status
    sentinel = valid_event("cn.gov.liandong.case.filed.v1", subject)
    assert (await hub.post(sentinel)).status_code == 202

    seen = await ids_on_partition_until(broker, topic_for("case"), subject.encode(), sentinel["id"])
    assert seen == [sentinel["id"]], "events of a refused batch reached the broker"


async def ids_on_partition_until(bootstrap: str, topic: str, key: bytes, last_id: str) -> list[str]:
    """The ids of records keyed `key`, read from the start until `last_id` is seen."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:

        async def partitions() -> set[int] | None:
            found: set[int] | None = consumer.partitions_for_topic(topic)
            return found

        consumer.assign([TopicPartition(topic, p) for p in sorted(await wait_for(partitions, 10, topic))])
        await consumer.seek_to_beginning()
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while last_id not in seen:
            assert time.monotonic() < deadline, f"{last_id} not on {topic} in 20 s"
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                seen += [dict(r.headers)["ce_id"].decode() for r in batch if r.key == key]
        return seen
    finally:
        await consumer.stop()
