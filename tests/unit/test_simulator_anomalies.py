"""The lapses the simulator injects on purpose (issue 7), so that the hub's analysis has real cases
to find: repeat inspections of one business by two units, and major decisions without legal review.

One full year of the default seed is drawn with the profile's rates and once more with both rates
at zero: the second shows that the injections are drawn from streams of their own and leave the
rest of the seed's year as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from connectors.http_gateway.ingest import Limits, validate_event
from connectors.simulator import SimulatedEvent, YearModel
from connectors.simulator.channels import Channel
from connectors.simulator.profile import Profile
from connectors.simulator.runner import Pace, play
from connectors.simulator.simulated import INJECTED_KINDS, LEGAL_REVIEW_MISSING, REPEAT_INSPECTION
from events.catalog import Catalog
from events.directory import Directory

CST = timezone(timedelta(hours=8))
SEED = 2022  # the seed of `liandong simulate`, `up --demo` and the integration test
YEAR_START, YEAR_END = datetime(2022, 1, 1, tzinfo=CST), datetime(2023, 1, 1, tzinfo=CST)
WINDOW = timedelta(days=30)  # the hub's REPEAT_INSPECTION_WINDOW (projections/anomalies.py)
TASKED = "linkage.inspection_tasked.v1"


@dataclass(frozen=True)
class Tasking:
    subject: str
    publisher: str
    inspecting_unit: str
    business_key: str
    business_name: str
    credit_code: str | None
    time: datetime
    marked: bool


@dataclass
class Stream:
    """What one pass over a year found."""

    lines: dict[str, tuple[str, str]] = field(default_factory=dict)  # event id -> (subject, digest)
    types: Counter[str] = field(default_factory=Counter)
    marked: list[SimulatedEvent] = field(default_factory=list)
    taskings: list[Tasking] = field(default_factory=list)
    needs_review: set[str] = field(default_factory=set)  # filed with requires_legal_review
    reviewed: set[str] = field(default_factory=set)  # any legal-review event
    major_decisions: list[SimulatedEvent] = field(default_factory=list)
    linkage_and_major: list[SimulatedEvent] = field(default_factory=list)  # to validate


def _business_key(data: dict[str, object]) -> str:
    """The hub's key (projections/analysis_store.py): the credit code, else the name."""
    code, name = data.get("business_credit_code"), data.get("business_name")
    if isinstance(code, str) and code.strip():
        return "uscc:" + code.strip().upper()
    return "name:" + str(name).strip()


def _read(model: YearModel) -> Stream:
    found = Stream()
    for e in model.events():
        line = {"publish_at": e.publish_at.isoformat(), "channel": e.channel, **e.cloudevent()}
        digest = hashlib.sha1(json.dumps(line, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
        found.lines[e.event_id] = (e.subject, digest)
        found.types[e.type] += 1
        if e.anomaly is not None:
            found.marked.append(e)
        data = dict(e.data)
        if e.type == TASKED:
            found.taskings.append(
                Tasking(
                    e.subject,
                    e.unit,
                    str(data["inspecting_unit"]),
                    _business_key(data),
                    str(data["business_name"]),
                    data.get("business_credit_code"),  # type: ignore[arg-type]
                    e.time,
                    e.anomaly == REPEAT_INSPECTION,
                )
            )
        if e.type == "case.filed.v1" and data.get("requires_legal_review"):
            found.needs_review.add(e.subject)
        if e.type.startswith("case.legal_review_"):
            found.reviewed.add(e.subject)
        if e.type == "case.decided.v2" and data.get("major_case"):
            found.major_decisions.append(e)
        if e.area == "linkage" or e.subject in found.needs_review:
            found.linkage_and_major.append(e)
    return found


@pytest.fixture(scope="module")
def year() -> Stream:
    return _read(YearModel(SEED))


@pytest.fixture(scope="module")
def year_without_lapses() -> Stream:
    profile = Profile.load()
    rates = {**profile.raw["anomalies"], "repeat_inspection": 0.0, "legal_review_missing": 0.0}
    quiet = Profile(raw={**profile.raw, "anomalies": rates}, categories=profile.categories)
    return _read(YearModel(SEED, profile=quiet))


def _repeat_pairs(taskings: Sequence[Tasking]) -> list[tuple[Tasking, Tasking]]:
    """The hub's rule, read off the stream: one business, two units, within 30 days either way."""
    by_business: dict[str, list[Tasking]] = defaultdict(list)
    for t in taskings:
        by_business[t.business_key].append(t)
    pairs = []
    for rows in by_business.values():
        rows.sort(key=lambda t: (t.time, t.subject))
        for i, earlier in enumerate(rows):
            for later in rows[i + 1 :]:
                if later.inspecting_unit != earlier.inspecting_unit and later.time - earlier.time <= WINDOW:
                    pairs.append((earlier, later))
    return pairs


def test_a_few_dozen_businesses_are_inspected_again_by_another_unit_within_30_days(year: Stream) -> None:
    pairs = _repeat_pairs(year.taskings)
    marked = [e for e in year.marked if e.anomaly == REPEAT_INSPECTION]
    # Each injected repeat is exactly one pair the hub will find, counted on its later inspection.
    assert sorted(later.subject for _, later in pairs) == sorted(e.subject for e in marked)
    assert sum(t.marked for t in year.taskings) == len(marked)
    assert 10 <= len(pairs) <= 60, len(pairs)
    for earlier, later in pairs:
        assert later.marked
        assert not earlier.marked
        assert earlier.credit_code is not None
        assert earlier.credit_code == later.credit_code
        assert earlier.business_name == later.business_name
        assert timedelta(0) < later.time - earlier.time < WINDOW
        units = {earlier.inspecting_unit, later.inspecting_unit}
        office = next(u for u in units if u.endswith(".enforcement-office"))
        issuer = (units - {office}).pop()
        # The issuer that tasked the office inspects the business itself, under a task id of its own.
        assert {earlier.publisher, later.publisher} == {issuer}
        assert issuer.endswith((".market-supervision-office", ".planning-resources-office")) or (
            issuer == "district.planning-resources"
        )
    # Either unit may come first: the office after the issuer's spot check, or the other way round.
    firsts = Counter(earlier.inspecting_unit.endswith(".enforcement-office") for earlier, _ in pairs)
    assert firsts[True] > 0
    assert firsts[False] > 0


def test_a_handful_of_major_office_cases_are_decided_without_any_legal_review(year: Stream) -> None:
    unreviewed = [e for e in year.major_decisions if "legal_review_id" not in e.data]
    marked = [e for e in year.marked if e.anomaly == LEGAL_REVIEW_MISSING]
    assert [e.event_id for e in unreviewed] == [e.event_id for e in marked]
    assert 1 <= len(marked) <= 15, len(marked)
    assert len(marked) / len(year.major_decisions) < 0.02
    for e in marked:
        assert e.type == "case.decided.v2"
        assert e.data["major_case"] is True
        assert e.unit.endswith(".enforcement-office")
        # The filing says the case needs a review, and none was ever asked for or given.
        assert e.subject in year.needs_review
        assert e.subject not in year.reviewed
    # Every other major decision cites the review that came before it.
    assert all(e.data.get("legal_review_id") for e in year.major_decisions if e not in marked)


def test_the_injected_events_pass_the_gateways_validation(year: Stream) -> None:
    catalog, directory = Catalog.load(), Directory.load()
    lapses = {e.subject for e in year.marked if e.anomaly == LEGAL_REVIEW_MISSING}
    permits = {t.subject.removesuffix("-JC") for t in year.taskings if t.subject.endswith("-JC")}
    checked = 0
    for e in year.linkage_and_major:
        if e.subject in lapses or e.subject.removesuffix("-JC") in permits:
            validate_event(e.cloudevent(), e.unit, catalog, directory, Limits())
            checked += 1
    assert checked >= 2 * len(year.marked)


def _family(subject: str, roots: set[str]) -> bool:
    """The subject or one of its own (a case's sharing notice `-GX`, a permit's task `-JC`)."""
    return subject in roots or subject.rsplit("-", 1)[0] in roots


def test_the_injections_change_nothing_else_in_the_seeds_year(
    year: Stream, year_without_lapses: Stream
) -> None:
    assert year_without_lapses.marked == []
    lapses = {e.subject for e in year.marked if e.anomaly == LEGAL_REVIEW_MISSING}
    tasks = {t.subject for t in year.taskings if t.subject.endswith("-JC")}
    assert tasks

    def rest(stream: Stream) -> dict[str, str]:
        return {
            event_id: digest
            for event_id, (subject, digest) in stream.lines.items()
            if not _family(subject, lapses) and subject not in tasks
        }

    # Every other event, its id, time and content, is the same with or without the injections.
    assert rest(year) == rest(year_without_lapses)
    # So are the calibrated figures.
    for kind in ("case.filed.v1", "case.reconsideration_filed.v1", "case.publication_withdrawn.v1"):
        assert year.types[kind] == year_without_lapses.types[kind]
    assert year.types["case.filed.v1"] == 13_097


class _Sink:
    name = "gateway"

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    async def publish(self, events: Sequence[SimulatedEvent]) -> None:
        self.counts.update(e.unit for e in events)

    async def close(self) -> None:
        return None


def test_the_run_summary_counts_each_published_injection_once(year: Stream) -> None:
    ordinary = [e for e in year.linkage_and_major if e.anomaly is None][:50]
    events = sorted([*year.marked, *ordinary], key=lambda e: e.publish_at)
    channels: dict[str, Channel] = {name: _Sink() for name in ("gateway", "sdk", "spreadsheet")}
    summary = asyncio.run(play(events, channels, Pace.of("max"), start=YEAR_START, end=YEAR_END))
    expected = {kind: sum(e.anomaly == kind for e in year.marked) for kind in sorted(INJECTED_KINDS)}
    assert all(n > 0 for n in expected.values())
    assert summary.events == len(events)
    assert summary.as_json()["injected_anomalies"] == expected
