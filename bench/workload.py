"""A realistic event mix over the real catalog, for the end-to-end, latency and rebuild benchmarks.

Stories follow the lifecycles of `events/mechanisms.json`: administrative cases from lead or filing to
closing and archiving (some stop half-way, as open cases do), transfers, assistance requests,
consultations, complaints, information notices, joint operations and supervision orders. Each story
happens in one of the 16 townships, told by that township's units (enforcement office, market
supervision office, police station, judicial office) and the district justice bureau, with the publish
rights and jurisdiction of `events/directory/units.json`, so the HTTP gateway accepts every event.

Many stories are told at once, interleaved, as units work in parallel. Each unit sends its own events
in order, in batches of its own: a gateway request carries one unit's key, so one unit's batch may
reach the hub before an earlier event of the same story sent by another unit, as in production.

Occurrence times lie in the hours before the run and every date in the data weeks after it, so the
clock projection starts clocks whose thresholds are days away: no alert fires during a benchmark.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from aiokafka import AIOKafkaProducer

from connectors.http_gateway.ingest import Limits, validate_event
from events.catalog import Catalog, topic_for
from events.directory import Directory
from events.ids import uuid7
from events.registry import LocalSchemaRegistry
from events.samples import SampleContext, sample_data
from events.serde import EncodedRecord, EventCodec

CN = timezone(timedelta(hours=8))
PREFIX = "cn.gov.liandong."
TOWNSHIPS = (
    "shiqiao",
    "shatou",
    "donghuan",
    "qiaonan",
    "xiaoguwei",
    "dashi",
    "luopu",
    "shibi",
    "zhongcun",
    "dalong",
    "shawan",
    "nancun",
    "xinzao",
    "hualong",
    "shilou",
    "shiqi",
)
JUSTICE = "district.justice-bureau"
# Stories in flight at once: each next event comes from one of them, chosen at random.
IN_FLIGHT = 400


@dataclass(frozen=True, slots=True)
class Step:
    """One event of a story: its type, who says it, and to whom it refers (`other`)."""

    short_type: str
    actor: str
    other: str
    overrides: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Cast:
    township: str
    office: str  # the enforcement office or the market supervision office of the township
    police: str
    judicial: str
    market: str
    far_police: str  # a police station of another township, for transfers across townships


def _cast(rng: random.Random) -> Cast:
    township = rng.choice(TOWNSHIPS)
    office = (
        f"{township}.{rng.choice(('enforcement-office', 'enforcement-office', 'market-supervision-office'))}"
    )
    far = rng.choice([t for t in TOWNSHIPS if t != township])
    return Cast(
        township,
        office,
        f"{township}.police-station",
        f"{township}.judicial-office",
        f"{township}.market-supervision-office",
        f"{far}.police-station",
    )


def _case(rng: random.Random, c: Cast) -> list[Step]:
    o, j = c.office, c.judicial
    steps: list[Step] = []
    if rng.random() < 0.08:
        return [Step("case.lead_received.v1", o, o), Step("case.not_filed.v1", o, o)]
    if rng.random() < 0.4:
        steps.append(Step("case.lead_received.v1", o, o))
    steps += [Step("case.filed.v1", o, o), Step("case.investigation_completed.v1", o, o)]
    if rng.random() < 0.15:
        steps += [Step("case.evidence_preserved.v1", o, o), Step("case.evidence_disposed.v1", o, o)]
    major = rng.random() < 0.3
    if major:
        steps += [
            Step("case.legal_review_requested.v1", o, j, (("reviewing_unit", j), ("major_case", True))),
            Step("case.legal_review_completed.v1", j, o),
        ]
    steps.append(Step("case.advance_notice_served.v1", o, o))
    if rng.random() < 0.25:
        steps.append(Step("case.statement_made.v1", o, o))
    steps += [
        Step("case.decided.v2", o, o, (("major_case", major),)),
        Step("case.decision_served.v1", o, o),
    ]
    if rng.random() < 0.2:
        steps.append(Step("case.published.v1", o, o))
    steps += [Step("case.executed.v1", o, o), Step("case.closed.v1", o, o)]
    if rng.random() < 0.5:
        steps.append(Step("case.archived.v1", o, o))
    if rng.random() < 0.25:  # a case still open: its story stops part of the way
        steps = steps[: rng.randint(1, len(steps) - 1)]
    return steps


def _transfer(rng: random.Random, c: Cast) -> list[Step]:
    to = c.far_police if rng.random() < 0.2 else c.police
    first = Step("transfer.requested.v1", c.office, to, (("to_unit", to),))
    if rng.random() < 0.1:
        return [first, Step("transfer.received.v1", to, c.office), Step("transfer.objected.v1", to, c.office)]
    return [
        first,
        Step("transfer.received.v1", to, c.office),
        Step("transfer.accepted.v1", to, c.office),
        Step("transfer.result_reported.v1", to, c.office),
    ]


def _assistance(rng: random.Random, c: Cast) -> list[Step]:
    to = c.police
    return [
        Step("assistance.requested.v1", c.office, to, (("to_unit", to),)),
        Step("assistance.accepted.v1", to, c.office),
        Step("assistance.result_reported.v1", to, c.office),
    ]


def _consultation(rng: random.Random, c: Cast) -> list[Step]:
    o, p, j = c.office, c.police, c.judicial
    return [
        Step("consultation.requested.v1", o, p, (("consulted_units", [p, j]), ("convening_unit", o))),
        Step("consultation.accepted.v1", p, o),
        Step("consultation.opinion_received.v1", p, o, (("unit", p),)),
        Step("consultation.opinion_received.v1", j, o, (("unit", j),)),
        Step("consultation.opinion_issued.v1", o, o, (("responsible_unit", o),)),
    ]


def _complaint(rng: random.Random, c: Cast) -> list[Step]:
    return [
        Step("complaint.received.v1", c.office, c.office),
        Step("complaint.assigned.v1", c.office, c.police, (("to_unit", c.police),)),
        Step("complaint.answered.v1", c.police, c.office),
    ]


def _info_sharing(rng: random.Random, c: Cast) -> list[Step]:
    o, p, m = c.office, c.police, c.market
    return [
        Step("info_sharing.notice_sent.v1", o, p, (("to_units", [p, m]),)),
        Step("info_sharing.notice_acknowledged.v1", p, o, (("unit", p),)),
        Step("info_sharing.notice_acknowledged.v1", m, o, (("unit", m),)),
    ]


def _joint_operation(rng: random.Random, c: Cast) -> list[Step]:
    o, p, m = c.office, c.police, c.market
    return [
        Step("joint_operation.planned.v1", o, p, (("units", [o, p, m]),)),
        Step("joint_operation.unit_joined.v1", p, o, (("unit", p),)),
        Step("joint_operation.held.v1", o, p),
        Step("joint_operation.finding_reported.v1", o, p, (("unit", o),)),
    ]


def _supervision(rng: random.Random, c: Cast) -> list[Step]:
    return [
        Step("supervision.order_issued.v1", JUSTICE, c.office, (("to_unit", c.office),)),
        Step("supervision.order_replied.v1", c.office, JUSTICE),
        Step("supervision.order_closed.v1", JUSTICE, c.office),
    ]


STORIES = (
    (_case, 0.40, "C"),
    (_transfer, 0.14, "TR"),
    (_assistance, 0.08, "AS"),
    (_consultation, 0.07, "CO"),
    (_complaint, 0.14, "CP"),
    (_info_sharing, 0.06, "IS"),
    (_joint_operation, 0.05, "JO"),
    (_supervision, 0.06, "SV"),
)


class Workload:
    """An endless, interleaved stream of (unit, CloudEvent JSON) in story order."""

    def __init__(self, seed: int = 6, start: datetime | None = None) -> None:
        self._rng = random.Random(seed)
        self._seed = seed
        self._catalog = Catalog.load()
        self._directory = Directory.load()
        self._start = start or datetime.now(UTC) - timedelta(hours=6)
        self._stories = 0
        self._samples: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self._types = {k.short_type: k for k in self._catalog}

    def _data(self, step: Step, township: str, when: datetime) -> dict[str, Any]:
        key = (step.short_type, township, step.actor, step.other)
        sample = self._samples.get(key)
        if sample is None:
            later = when + timedelta(days=30)
            ctx = SampleContext(
                township=township,
                unit=step.actor,
                other_unit=step.other,
                date=later.astimezone(CN).date().isoformat(),
                timestamp=later.astimezone(CN).isoformat(timespec="seconds"),
            )
            sample = sample_data(self._types[step.short_type].latest, ctx)
            if len(self._samples) < 50_000:
                self._samples[key] = sample
        data = dict(sample)
        data.update(step.overrides)
        return data

    def _story(self) -> Iterator[tuple[str, dict[str, Any]]]:
        rng = self._rng
        make, _weight, prefix = rng.choices(STORIES, weights=[w for _, w, _ in STORIES])[0]
        cast = _cast(rng)
        self._stories += 1
        # The seed is part of the subject: two workloads in one database (a preload, then the
        # measured load) never tell stories about each other's subjects.
        subject = f"{prefix}-{cast.township}-{self._seed}-{self._stories:08d}"
        when = self._start + timedelta(seconds=rng.randint(0, 3 * 3600))
        for step in make(rng, cast):
            when += timedelta(minutes=rng.randint(1, 30))
            event = {
                "specversion": "1.0",
                "id": str(uuid7()),
                "source": step.actor,
                "type": PREFIX + step.short_type,
                "subject": subject,
                "time": when.astimezone(CN).isoformat(timespec="seconds"),
                "datacontenttype": "application/json",
                "data": self._data(step, cast.township, when),
            }
            yield step.actor, event

    def events(self) -> Iterator[tuple[str, dict[str, Any]]]:
        flights = [self._story() for _ in range(IN_FLIGHT)]
        while True:
            i = self._rng.randrange(IN_FLIGHT)
            item = next(flights[i], None)
            if item is None:
                flights[i] = self._story()
                item = next(flights[i])
            yield item


def requests(
    events: Iterator[tuple[str, dict[str, Any]]], count: int, batch: int
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """`count` events as per-unit requests of `batch` events (the last ones may be shorter).

    A request leaves when its unit has `batch` events waiting: each unit sends in its own order.
    """
    waiting: dict[str, list[dict[str, Any]]] = {}
    for _ in range(count):
        unit, event = next(events)
        queue = waiting.setdefault(unit, [])
        queue.append(event)
        if len(queue) == batch:
            yield unit, queue
            waiting[unit] = []
    for unit, queue in waiting.items():
        if queue:
            yield unit, queue


def body(events: Sequence[dict[str, Any]]) -> bytes:
    return json.dumps(events, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Request:
    """One gateway request: a unit's batch, its body, and the ids it carries."""

    unit: str
    body: bytes
    ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Expected:
    """What the projections must hold once every event is projected."""

    events: int
    cases: int
    matters: int


def prepare(seed: int, count: int, batch: int) -> tuple[list[Request], Expected]:
    reqs: list[Request] = []
    cases: set[str] = set()
    matters: set[tuple[str, str]] = set()
    for unit, events in requests(Workload(seed).events(), count, batch):
        reqs.append(Request(unit, body(events), tuple(e["id"] for e in events)))
        for e in events:
            area = e["type"].split(".")[3]
            if area == "case":
                cases.add(e["subject"])
            else:
                matters.add((area, e["subject"]))
    return reqs, Expected(count, len(cases), len(matters))


async def encode(reqs: Sequence[Request]) -> list[tuple[str, EncodedRecord]]:
    """The records the gateway would publish for these requests: validated and encoded the same way."""
    catalog, directory = Catalog.load(), Directory.load()
    codec = EventCodec(catalog, LocalSchemaRegistry())
    await codec.prepare()
    limits = Limits()
    out: list[tuple[str, EncodedRecord]] = []
    for r in reqs:
        for item in json.loads(r.body):
            event = validate_event(item, r.unit, catalog, directory, limits)
            out.append((topic_for(catalog.get(event.type).family), codec.encode(event)))
    return out


async def publish_archive(bootstrap: str, count: int, seed: int, chunk: int = 500) -> float:
    """Publish `count` events of the mix to the topics, encoded as the gateway does; return seconds."""
    catalog, directory = Catalog.load(), Directory.load()
    codec = EventCodec(catalog, LocalSchemaRegistry())
    await codec.prepare()
    limits = Limits()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        in_flight: list[asyncio.Future[object]] = []
        done = 0
        for unit, events in requests(Workload(seed).events(), count, chunk):
            for item in events:
                e = validate_event(item, unit, catalog, directory, limits)
                r = codec.encode(e)
                topic = topic_for(catalog.get(e.type).family)
                in_flight.append(await producer.send(topic, value=r.value, key=r.key, headers=r.headers))
            if len(in_flight) >= 5_000:
                await asyncio.gather(*in_flight)
                done += len(in_flight)
                in_flight = []
                if done % 100_000 < 5_000:
                    print(f"    archived {done:,}", file=sys.stderr, flush=True)
        await asyncio.gather(*in_flight)
    finally:
        await producer.stop()
    return time.perf_counter() - started
