"""The simulated year (connectors.simulator.model): exact figures, valid events, lifecycles in order.

One full year is generated once for the module and checked in a single pass; a second generation
checks that the seed decides everything.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from connectors.http_gateway.ingest import Limits, validate_event
from connectors.sdk import event_id_for
from connectors.simulator import SimulatedEvent, YearModel, simulate_year, to_envelope
from connectors.simulator.profile import GATEWAY, SDK, SPREADSHEET, Profile
from connectors.spreadsheet.importer import record_id_for
from events.catalog import Catalog
from events.directory import Directory
from events.jsonavro import DataError
from events.mechanisms import Mechanisms

CST = timezone(timedelta(hours=8))
SEED = 11
YEAR_START, YEAR_END = datetime(2022, 1, 1, tzinfo=CST), datetime(2023, 1, 1, tzinfo=CST)


def digest(events: Iterable[SimulatedEvent]) -> str:
    h = hashlib.sha256()
    for e in events:
        line = {"publish_at": e.publish_at.isoformat(), "channel": e.channel, **e.cloudevent()}
        h.update(json.dumps(line, ensure_ascii=False, sort_keys=True).encode())
    return h.hexdigest()


@dataclass
class Year:
    """What one pass over the stream found."""

    count: int = 0
    digest: str = ""
    types: Counter[str] = field(default_factory=Counter)
    channels: Counter[str] = field(default_factory=Counter)
    channel_units: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    invalid: list[str] = field(default_factory=list)
    out_of_publish_order: int = 0
    published_before_occurring: int = 0
    outside_the_year: int = 0
    duplicate_ids: int = 0
    lifecycle_breaks: list[str] = field(default_factory=list)
    subject_out_of_scope: list[str] = field(default_factory=list)
    reconsiderations: dict[str, dict[str, datetime | str]] = field(default_factory=lambda: defaultdict(dict))
    stalled_share: float = 0.0
    stalled: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    spreadsheet_ids_agree: bool = True


@pytest.fixture(scope="module")
def year() -> Year:
    catalog, directory, mechanisms = Catalog.load(), Directory.load(), Mechanisms.load()
    model = YearModel(SEED)
    found = Year()
    h = hashlib.sha256()
    seen_ids: set[str] = set()
    history: dict[tuple[str, str], list[tuple[datetime, str]]] = defaultdict(list)
    townships: dict[tuple[str, str], str] = {}
    parties: dict[tuple[str, str], set[str]] = defaultdict(set)
    last_publish = YEAR_START
    for e in model.events():
        found.count += 1
        line = {"publish_at": e.publish_at.isoformat(), "channel": e.channel, **e.cloudevent()}
        h.update(json.dumps(line, ensure_ascii=False, sort_keys=True).encode())
        found.types[e.type] += 1
        found.channels[e.channel] += 1
        found.channel_units[e.channel].add(e.unit)
        try:
            envelope = validate_event(e.cloudevent(), e.unit, catalog, directory, Limits())
        except (DataError, Exception) as exc:  # every refusal is listed, whatever its kind
            found.invalid.append(f"{e.type} {e.subject}: {exc}")
            continue
        found.out_of_publish_order += e.publish_at < last_publish
        last_publish = e.publish_at
        found.published_before_occurring += e.publish_at < e.time
        found.outside_the_year += not YEAR_START <= e.time < YEAR_END
        found.duplicate_ids += envelope.id in seen_ids
        seen_ids.add(envelope.id)
        if e.channel == SPREADSHEET:
            found.spreadsheet_ids_agree &= e.event_id == event_id_for(
                e.unit, record_id_for(e.type, e.subject)
            )
        step = mechanisms.step(envelope.type)
        key = (e.area, e.subject)
        if step is not None:
            earlier = {name for at, name in history[key] if at <= e.time}
            if step.requires and not earlier & set(step.requires):
                found.lifecycle_breaks.append(f"{e.type} {e.subject} before any of {step.requires}")
            # The lapses injected on purpose (`anomaly`) are checked in test_simulator_anomalies.py.
            major = e.type.startswith("case.decided") and e.data.get("major_case") and e.anomaly is None
            if major and "legal_review_completed" not in earlier:
                found.lifecycle_breaks.append(f"{e.subject}: major case decided without legal review")
            _check_scope(e, step.parties, townships, parties, directory, found)
            history[key].append((e.time, step.event))
        if e.type.startswith("case.reconsideration"):
            entry = found.reconsiderations[e.subject]
            entry[e.type.split(".")[1]] = e.time
            if "result" in e.data:
                entry["result"] = str(e.data["result"])
    found.digest = h.hexdigest()
    found.stalled_share = model.ledger.share
    found.stalled = model.ledger.stalled
    return found


def _check_scope(
    e: SimulatedEvent,
    party_fields: tuple[str, ...],
    townships: dict[tuple[str, str], str],
    parties: dict[tuple[str, str], set[str]],
    directory: Directory,
    found: Year,
) -> None:
    """The gateway's subject rule: an event naming no township concerns one the unit covers or is part of."""
    key = (e.area, e.subject)
    township = e.data.get("township")
    if isinstance(township, str):
        townships.setdefault(key, township)
    elif key in townships:
        covered = directory.units[e.unit].covers(townships[key])
        if not covered and e.unit not in parties[key] and e.data.get("handling_unit") != e.unit:
            found.subject_out_of_scope.append(f"{e.unit} {e.type} {e.subject}")
    parties[key].add(e.unit)
    if e.area == "case" and isinstance(e.data.get("handling_unit"), str):
        parties[key].add(str(e.data["handling_unit"]))
    for name in party_fields:
        value = e.data.get(name)
        parties[key].update([value] if isinstance(value, str) else value if isinstance(value, list) else [])


def test_the_year_files_exactly_the_articles_13097_cases_within_2022(year: Year) -> None:
    assert year.types["case.filed.v1"] == 13_097
    assert year.outside_the_year == 0


def test_exactly_18_reconsiderations_are_filed_and_decided_in_2022_and_5_revoke_or_change(year: Year) -> None:
    assert len(year.reconsiderations) == 18
    assert year.types["case.reconsideration_filed.v1"] == 18
    assert year.types["case.reconsideration_decided.v1"] == 18
    results = Counter(str(r["result"]) for r in year.reconsiderations.values())
    assert results["revoked"] + results["changed"] == 5
    assert set(results) <= {"revoked", "changed", "upheld", "dismissed"}
    for entry in year.reconsiderations.values():
        filed, decided = entry["reconsideration_filed"], entry["reconsideration_decided"]
        assert isinstance(filed, datetime)
        assert isinstance(decided, datetime)
        assert filed < decided <= filed + timedelta(days=60)
    # A revoked or changed decision is taken off the publicity platform (Art. 48).
    assert year.types["case.publication_withdrawn.v1"] == 5


def test_every_event_passes_the_gateways_validation_of_schema_references_rights_and_jurisdiction(
    year: Year,
) -> None:
    assert year.invalid == []
    assert year.subject_out_of_scope == []
    assert year.duplicate_ids == 0


def test_events_come_in_publish_order_and_never_before_they_occurred(year: Year) -> None:
    assert year.out_of_publish_order == 0
    assert year.published_before_occurring == 0


def test_each_subjects_events_follow_its_lifecycle(year: Year) -> None:
    assert year.lifecycle_breaks == []


def test_the_share_of_stalled_loops_lies_in_the_documented_range(year: Year) -> None:
    assert 0.03 <= year.stalled_share <= 0.08
    modes = Counter(mode for (_, _, mode) in year.stalled.elements())
    assert modes["late"] > 0
    assert modes["never"] > 0


def test_leads_not_filed_and_every_coordination_mechanism_occur(year: Year) -> None:
    assert year.types["case.not_filed.v1"] > 1000
    for area in (
        "transfer",
        "assistance",
        "joint_operation",
        "consultation",
        "dispute",
        "linkage",
        "info_sharing",
        "complaint",
        "public_supervisor",
        "criminal_transfer",
        "file_review",
    ):
        assert any(t.startswith(area + ".") for t in year.types), area


def test_the_event_count_stays_in_the_order_the_hub_is_sized_for(year: Year) -> None:
    assert 120_000 <= year.count <= 250_000


def test_each_unit_publishes_through_the_channel_the_profile_gives_it(year: Year) -> None:
    profile = Profile.load()
    assert set(year.channels) == {GATEWAY, SDK, SPREADSHEET}
    assert year.channel_units[SPREADSHEET] == set(profile.spreadsheet_units)
    assert "shilou.enforcement-office" in year.channel_units[SDK]
    assert "shiqiao.enforcement-office" in year.channel_units[GATEWAY]
    assert year.channel_units[SDK].isdisjoint(year.channel_units[GATEWAY])
    # The importer derives ids from the case id; the model's ids for those filings agree.
    assert year.spreadsheet_ids_agree


def test_the_same_seed_gives_a_byte_identical_stream(year: Year) -> None:
    assert digest(simulate_year(SEED)) == year.digest


def test_another_seed_gives_another_stream() -> None:
    first = [e for _, e in zip(range(300), simulate_year(SEED), strict=False)]
    other = [e for _, e in zip(range(300), simulate_year(SEED + 1), strict=False)]
    assert {e.event_id for e in first}.isdisjoint({e.event_id for e in other})
    assert digest(first) != digest(other)


def test_to_envelope_gives_the_avro_ready_envelope_the_sdk_would_publish() -> None:
    event = next(e for e in simulate_year(SEED) if e.type == "case.filed.v1" and e.channel == GATEWAY)
    envelope = to_envelope(event)
    assert envelope.id == event.event_id
    assert envelope.type == "cn.gov.liandong.case.filed.v1"
    assert envelope.source == event.unit
    assert envelope.subject == event.subject
    assert envelope.time == event.time
    assert envelope.data["township"] == event.data["township"]
