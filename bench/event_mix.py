"""Event sources for the projection benchmark: what a district's units publish, in arrival order.

A source is a function `(count, seed=...) -> list[Envelope]`. Three are built in:

- `case3`: filed / decided / closed, three events per case (the first measurement's mix);
- `catalog`: whole lifecycles over the catalog. Cases go lead → filed → investigation → (legal
  review) → advance notice → (hearing or statement) → decided → served → published → (executed)
  → (reconsideration) → closed → archived, or stop at `not_filed`. Beside them run transfers,
  assistance requests, consultations (one opinion per consulted unit), supervision orders (some
  reopened), information-sharing notices, complaints, joint operations and disputes. Subjects,
  publishing units and the 16 townships vary, so upserts and clocks spread over many rows. About
  1% of events arrive late (after later events of their subject), as they do from real systems;
- `simulator`: the first events of a simulated year of Panyu (`connectors/simulator`, calibrated to
  the district's figures; mostly cases, with complaints, assistance, transfers and the rest).

Data comes from `events.samples.sample_data` for the type's latest schema, overridden per
lifecycle step, and converted with `events.jsonavro.from_json` as the gateway does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from events.catalog import Catalog, EventKind
from events.directory import Directory
from events.envelope import TYPE_PREFIX, Envelope
from events.ids import uuid7
from events.jsonavro import from_json
from events.samples import SampleContext, sample_data

Source = Callable[..., list[Envelope]]
"""(count, seed=its own default) -> events in arrival order."""

START = datetime(2025, 3, 3, 1, 0, tzinfo=UTC)  # a year with official calendar data
SPAN = timedelta(days=180)
LATE_FRACTION = 0.01
LATE_BY_EVENTS = 3_000
DISTRICT_UNITS = (
    "district.urban-management",
    "district.market-supervision",
    "district.ecology-environment",
    "district.housing-construction",
)
SUPERVISOR = "district.justice-bureau"
CATEGORIES = ("illegal_construction", "street_vending", "noise", "waste", "advertising", "food_safety")


@dataclass(frozen=True, slots=True)
class Step:
    after: timedelta  # since the previous step of the same lifecycle
    short_type: str
    source: str
    data: Mapping[str, Any]


class _Builder:
    """Turns lifecycle steps into envelopes with valid, Avro-ready data."""

    def __init__(self) -> None:
        self._catalog = Catalog.load()
        self._directory = Directory.load()
        self._kinds: dict[str, EventKind] = {}

    def kind(self, short_type: str) -> EventKind:
        if short_type not in self._kinds:
            self._kinds[short_type] = self._catalog.get(TYPE_PREFIX + short_type)
        return self._kinds[short_type]

    def event(self, step: Step, subject: str, at: datetime, township: str) -> Envelope:
        kind = self.kind(step.short_type)
        ctx = SampleContext(
            township=township,
            unit=step.source,
            other_unit=f"{township}.police-station",
            date=_local_date(at).isoformat(),
            timestamp=at.isoformat(),
        )
        raw = {**sample_data(kind.latest, ctx), **step.data}
        return Envelope(
            id=str(uuid7()),
            type=kind.type,
            source=step.source,
            subject=subject,
            time=at,
            data=from_json(kind.latest, raw, "data", self._directory.knows),
        )


def _local_date(at: datetime) -> date:
    return (at + timedelta(hours=8)).date()


def _day(at: datetime, days: float) -> str:
    return _local_date(at + timedelta(days=days)).isoformat()


def _hours(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(hours=rng.uniform(low, high))


def _days(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(days=rng.uniform(low, high))


def _case(rng: random.Random, township: str, t0: datetime) -> list[Step]:
    office = f"{township}.enforcement-office"
    if rng.random() < 0.2:
        office = f"{township}.market-supervision-office"
    judicial = f"{township}.judicial-office"
    category = rng.choice(CATEGORIES)
    where = {"township": township, "category": category, "handling_unit": office}
    steps = [Step(timedelta(0), "case.lead_received.v1", office, {**where, "channel": "patrol"})]
    if rng.random() < 0.12:
        steps.append(
            Step(_days(rng, 1, 10), "case.not_filed.v1", office, {**where, "reason": "no_violation"})
        )
        return steps
    major = rng.random() < 0.15
    steps.append(Step(_days(rng, 1, 8), "case.filed.v1", office, {**where, "requires_legal_review": major}))
    if rng.random() < 0.3:
        steps += [
            Step(_days(rng, 0.5, 2), "case.evidence_preserved.v1", office, {}),
            Step(_days(rng, 2, 8), "case.evidence_disposed.v1", office, {}),
        ]
    steps.append(Step(_days(rng, 5, 30), "case.investigation_completed.v1", office, {}))
    if major:
        steps += [
            Step(_days(rng, 0.5, 2), "case.legal_review_requested.v1", office, {"reviewing_unit": judicial}),
            Step(_days(rng, 1, 5), "case.legal_review_completed.v1", judicial, {"conclusion": "approved"}),
        ]
    hearing_right = rng.random() < 0.35
    steps.append(
        Step(_days(rng, 1, 4), "case.advance_notice_served.v1", office, {"hearing_right": hearing_right})
    )
    if hearing_right and rng.random() < 0.4:
        steps += [
            Step(_days(rng, 1, 4), "case.hearing_requested.v1", office, {}),
            Step(_days(rng, 1, 3), "case.hearing_scheduled.v1", office, {}),
            Step(_days(rng, 8, 12), "case.hearing_held.v1", office, {"host_unit": office}),
        ]
    elif rng.random() < 0.3:
        steps.append(Step(_days(rng, 1, 4), "case.statement_made.v1", office, {}))
    if rng.random() < 0.05:
        steps.append(Step(_days(rng, 1, 3), "case.decision_deadline_extended.v1", office, {}))
    penalty = rng.random() < 0.8
    fine = rng.randrange(10_000, 5_000_000, 100)
    penalties = [{"kind": "fine", "amount_fen": fine, "detail": None}] if penalty else []
    decided = {"outcome": "penalty" if penalty else "no_penalty", "penalties": penalties, "major_case": major}
    steps += [
        Step(_days(rng, 3, 15), "case.decided.v2", office, decided),
        Step(_days(rng, 1, 9), "case.decision_served.v1", office, {}),
        Step(_days(rng, 1, 8), "case.published.v1", office, {}),
    ]
    if penalty:
        steps.append(Step(_days(rng, 3, 20), "case.executed.v1", office, {"amount_paid_fen": fine}))
    if rng.random() < 0.06:
        result = "changed" if rng.random() < 0.3 else "upheld"
        steps += [
            Step(_days(rng, 5, 40), "case.reconsideration_filed.v1", office, {}),
            Step(_days(rng, 30, 60), "case.reconsideration_decided.v1", office, {"result": result}),
        ]
        if result == "changed":
            steps.append(Step(_days(rng, 1, 3), "case.publication_withdrawn.v1", office, {}))
    steps.append(Step(_days(rng, 1, 5), "case.closed.v1", office, {"closure_reason": "executed"}))
    if rng.random() < 0.7:
        steps.append(Step(_days(rng, 5, 20), "case.archived.v1", office, {}))
    return steps


def _other_unit(rng: random.Random, township: str) -> str:
    if rng.random() < 0.3:
        return rng.choice(DISTRICT_UNITS)
    return f"{township}.{rng.choice(('police-station', 'judicial-office', 'market-supervision-office'))}"


def _transfer(rng: random.Random, township: str, t0: datetime) -> list[Step]:
    office = f"{township}.enforcement-office"
    to = _other_unit(rng, township)
    urgent = rng.random() < 0.1
    requested = {"to_unit": to, "township": township, "urgent": urgent, "discovered_on": _day(t0, -1)}
    steps = [
        Step(timedelta(0), "transfer.requested.v1", office, requested),
        Step(_hours(rng, 1, 30), "transfer.received.v1", to, {}),
    ]
    if rng.random() < 0.15:
        return [*steps, Step(_days(rng, 1, 3), "transfer.objected.v1", to, {})]
    return [
        *steps,
        Step(_days(rng, 0.5, 4), "transfer.accepted.v1", to, {}),
        Step(_days(rng, 10, 60), "transfer.result_reported.v1", to, {}),
    ]


def _assistance(rng: random.Random, township: str, t0: datetime) -> list[Step]:
    office = f"{township}.enforcement-office"
    to = _other_unit(rng, township)
    requested = {"to_unit": to, "township": township, "reply_by": _day(t0, 3), "needed_on": _day(t0, 7)}
    steps = [Step(timedelta(0), "assistance.requested.v1", office, requested)]
    if rng.random() < 0.1:
        return [*steps, Step(_days(rng, 0.5, 3), "assistance.declined.v1", to, {})]
    return [
        *steps,
        Step(_days(rng, 0.5, 3), "assistance.accepted.v1", to, {}),
        Step(_days(rng, 2, 15), "assistance.result_reported.v1", to, {}),
    ]


def _consultation(rng: random.Random, township: str, t0: datetime) -> list[Step]:
    office = f"{township}.enforcement-office"
    consulted = sorted({_other_unit(rng, township) for _ in range(rng.randint(2, 3))})
    requested = {
        "consulted_units": consulted,
        "township": township,
        "reply_by": _day(t0, 7),
        "convening_unit": office,
    }
    steps = [
        Step(timedelta(0), "consultation.requested.v1", office, requested),
        Step(_days(rng, 0.5, 3), "consultation.accepted.v1", office, {}),
    ]
    steps += [
        Step(_days(rng, 0.5, 4), "consultation.opinion_received.v1", unit, {"unit": unit})
        for unit in consulted
    ]
    return [*steps, Step(_days(rng, 1, 5), "consultation.opinion_issued.v1", office, {})]


def _supervision(rng: random.Random, township: str, t0: datetime) -> list[Step]:
    to = f"{township}.enforcement-office"
    issued = {
        "to_unit": to,
        "township": township,
        "reply_by": _day(t0, 7),
        "about_area": "case",
        "about_subject": f"{township}-case-{rng.randrange(100_000):06d}",
    }
    steps = [
        Step(timedelta(0), "supervision.order_issued.v1", SUPERVISOR, issued),
        Step(_days(rng, 1, 8), "supervision.order_replied.v1", to, {}),
        Step(_days(rng, 1, 5), "supervision.order_closed.v1", SUPERVISOR, {}),
    ]
    if rng.random() < 0.1:
        steps += [
            Step(_days(rng, 3, 20), "supervision.order_reopened.v1", SUPERVISOR, {}),
            Step(_days(rng, 1, 6), "supervision.order_replied.v1", to, {}),
            Step(_days(rng, 1, 5), "supervision.order_closed.v1", SUPERVISOR, {}),
        ]
    return steps


def _info_sharing(rng: random.Random, township: str, t0: datetime) -> list[Step]:
    office = f"{township}.enforcement-office"
    to = sorted({_other_unit(rng, township) for _ in range(2)})
    kind = rng.choice(("permit", "major_penalty", "inspection_result"))
    sent = {"to_units": to, "township": township, "kind": kind, "decided_on": _day(t0, -1)}
    steps = [Step(timedelta(0), "info_sharing.notice_sent.v1", office, sent)]
    return steps + [
        Step(_days(rng, 0.2, 3), "info_sharing.notice_acknowledged.v1", unit, {"unit": unit}) for unit in to
    ]


def _complaint(rng: random.Random, township: str, t0: datetime) -> list[Step]:
    office = f"{township}.enforcement-office"
    to = _other_unit(rng, township)
    return [
        Step(timedelta(0), "complaint.received.v1", office, {"township": township, "reply_by": _day(t0, 15)}),
        Step(_hours(rng, 2, 48), "complaint.assigned.v1", office, {"to_unit": to, "reply_by": _day(t0, 10)}),
        Step(_days(rng, 1, 10), "complaint.answered.v1", to, {}),
    ]


def _joint_operation(rng: random.Random, township: str, t0: datetime) -> list[Step]:
    office = f"{township}.enforcement-office"
    units = sorted({office, *(_other_unit(rng, township) for _ in range(2))})
    joined = _other_unit(rng, township)
    return [
        Step(timedelta(0), "joint_operation.planned.v1", office, {"units": units, "township": township}),
        Step(_days(rng, 0.5, 3), "joint_operation.unit_joined.v1", joined, {"unit": joined}),
        Step(_days(rng, 1, 7), "joint_operation.held.v1", office, {"units_present": units}),
        Step(_days(rng, 1, 7), "joint_operation.finding_reported.v1", office, {"unit": office}),
    ]


def _dispute(rng: random.Random, township: str, t0: datetime) -> list[Step]:
    office = f"{township}.enforcement-office"
    other = _other_unit(rng, township)
    return [
        Step(timedelta(0), "dispute.raised.v1", office, {"units": [office, other], "township": township}),
        Step(_days(rng, 1, 5), "dispute.referred.v1", SUPERVISOR, {"referred_to": SUPERVISOR}),
        Step(_days(rng, 5, 20), "dispute.decided.v1", SUPERVISOR, {"responsible_unit": other}),
        Step(_days(rng, 1, 10), "dispute.listed.v1", SUPERVISOR, {}),
    ]


Lifecycle = Callable[[random.Random, str, datetime], list[Step]]
LIFECYCLES: tuple[tuple[str, Lifecycle, float], ...] = (
    ("case", _case, 0.45),
    ("transfer", _transfer, 0.12),
    ("assistance", _assistance, 0.10),
    ("complaint", _complaint, 0.07),
    ("consultation", _consultation, 0.06),
    ("supervision", _supervision, 0.06),
    ("info_sharing", _info_sharing, 0.06),
    ("joint_operation", _joint_operation, 0.04),
    ("dispute", _dispute, 0.04),
)


def catalog_mix(count: int, seed: int = 6) -> list[Envelope]:
    """`count` events of whole lifecycles, in arrival order (time order, ~1% late)."""
    rng = random.Random(seed)
    builder = _Builder()
    townships = sorted(Directory.load().townships)
    names, makers, weights = zip(*LIFECYCLES, strict=True)
    events: list[Envelope] = []
    serial = 0
    while len(events) < count:
        index = rng.choices(range(len(names)), weights)[0]
        township = rng.choice(townships)
        at = START + SPAN * rng.random()
        subject = f"{township}-{names[index]}-{serial:07d}"
        serial += 1
        for step in makers[index](rng, township, at):
            at += step.after
            events.append(builder.event(step, subject, at, township))
    # Lifecycles are cut at `count`: a cut one is a loop still open, as in any real stream.
    arrival = sorted(events, key=lambda e: e.time)[:count]
    for i in range(len(arrival)):
        if rng.random() < LATE_FRACTION:
            j = min(len(arrival) - 1, i + rng.randrange(1, LATE_BY_EVENTS))
            arrival.insert(j, arrival.pop(i))
    return arrival


def case3_mix(count: int, seed: int = 6) -> list[Envelope]:
    """filed / decided / closed, three per case, in order: the first measurement's mix."""
    from tests.support import case_event

    del seed  # deterministic already
    base = datetime(2025, 6, 16, 2, 0, tzinfo=UTC)
    kinds = ("filed", "decided", "closed")
    return [
        case_event(kinds[i % 3], f"shilou-bench-{i // 3:07d}", time_=base + timedelta(seconds=i))
        for i in range(count)
    ]


def simulator_mix(count: int, seed: int = 2022) -> list[Envelope]:
    """The first `count` events of a simulated year of Panyu (`connectors/simulator`), as the
    gateway would validate them: the calibrated mix, from January on."""
    from itertools import islice

    from connectors.simulator import simulate_year, to_envelope

    catalog, directory = Catalog.load(), Directory.load()
    return [to_envelope(e, catalog, directory) for e in islice(simulate_year(seed), count)]


SOURCES: dict[str, Source] = {"catalog": catalog_mix, "case3": case3_mix, "simulator": simulator_mix}
