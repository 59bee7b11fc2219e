"""The case registry's pure fold: order-independent, first value wins, stages only move forward."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.catalog import Catalog
from events.envelope import TYPE_PREFIX, Envelope
from events.ids import uuid7
from events.samples import sample_data
from projections.case_registry import (
    EVENT_STAGES,
    STAGE_RANKS,
    CaseChange,
    apply,
    fold,
    handles,
    merge,
)
from projections.schema import cases
from tests.support import case_event

CASE = "SL-2026-0007"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CATALOG = Catalog.load()
CASE_TYPES = sorted(k.type for k in CATALOG if k.family == "case")

# What a decision looks like to the projection: v1 is upcast to v2 on read (events/upcasters.py).
DECIDED_V2 = TYPE_PREFIX + "case.decided.v2"
DECIDED_DATA: Mapping[str, Any] = {
    "outcome": "penalty",
    "penalties": [
        {"kind": "warning", "amount_fen": None, "detail": None},
        {"kind": "fine", "amount_fen": 500_000, "detail": None},
    ],
    "decision_number": "石综执罚决〔2026〕7号",
    "major_case": False,
    "legal_review_id": None,
}


def decided(
    subject: str = CASE, *, time_: datetime | None = None, data: Mapping[str, Any] | None = None
) -> Envelope:
    """A `case.decided.v2` event, as projections receive it."""
    return Envelope(
        id=str(uuid7()),
        type=DECIDED_V2,
        source="shilou.enforcement-office",
        subject=subject,
        time=time_ or T0,
        data=dict(DECIDED_DATA if data is None else data),
    )


def sampled(short_type: str, subject: str = CASE, *, time_: datetime = T0) -> Envelope:
    """An event of any catalog type, with valid sample data for its latest revision."""
    kind = CATALOG.get(TYPE_PREFIX + short_type)
    return Envelope(
        id=str(uuid7()),
        type=kind.type,
        source="shilou.enforcement-office",
        subject=subject,
        time=time_,
        data=sample_data(kind.latest),
    )


def lifecycle() -> dict[str, Envelope]:
    """Filed, decided and closed, an hour apart, in that order of occurrence."""
    return {
        "filed": case_event("filed", CASE, time_=T0),
        "decided": decided(time_=T0 + timedelta(hours=1)),
        "closed": case_event("closed", CASE, time_=T0 + timedelta(hours=2)),
    }


ORDERS = list(itertools.permutations(["filed", "decided", "closed"]))


def test_the_stages_are_ranked_along_the_procedure() -> None:
    assert sorted(STAGE_RANKS, key=STAGE_RANKS.__getitem__) == [
        "lead",
        "filed",
        "investigating",
        "legal_review",
        "notified",
        "decided",
        "served",
        "executing",
        "closed",
        "archived",
    ]
    assert len(set(STAGE_RANKS.values())) == len(STAGE_RANKS)
    assert min(STAGE_RANKS.values()) > 0  # 0 is the rank of an event that does not move a case


def test_every_stage_event_is_a_case_event_of_the_catalog_and_maps_to_a_known_stage() -> None:
    for name, stage in EVENT_STAGES.items():
        assert TYPE_PREFIX + f"case.{name}.v1" in CATALOG.kinds, name
        assert stage in STAGE_RANKS, (name, stage)
    assert set(EVENT_STAGES.values()) == set(STAGE_RANKS)  # every stage is reachable


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_every_arrival_order_of_filed_decided_closed_folds_to_the_same_closed_row(
    order: tuple[str, ...],
) -> None:
    events = lifecycle()
    in_order = fold(events[k] for k in ("filed", "decided", "closed"))[CASE]

    change = fold(events[k] for k in order)[CASE]

    assert change.stage == "closed"
    assert change.stage_rank == STAGE_RANKS["closed"]
    assert change.event_count == 3
    assert change.last_event_at == T0 + timedelta(hours=2)
    assert dict(change.values) == dict(in_order.values)
    assert change.as_row() == in_order.as_row()


def test_the_folded_row_carries_the_values_of_all_three_events() -> None:
    events = lifecycle()
    row = fold(events.values())[CASE].as_row()

    assert row["township"] == "shilou"
    assert row["title"] == events["filed"].data["title"]
    assert row["requires_legal_review"] is False
    assert row["outcome"] == "penalty"
    assert row["fine_amount_fen"] == 500_000
    assert (row["filed_at"], row["decided_at"], row["closed_at"]) == (
        T0,
        T0 + timedelta(hours=1),
        T0 + timedelta(hours=2),
    )


def test_a_decision_without_an_amount_leaves_the_fine_empty() -> None:
    data = {**DECIDED_DATA, "penalties": [{"kind": "warning", "amount_fen": None, "detail": None}]}
    change = apply(decided(data=data))
    assert change.values["fine_amount_fen"] is None
    assert change.values["outcome"] == "penalty"


def test_fold_keeps_one_change_per_case() -> None:
    other = case_event("filed", "SL-2026-0008", time_=T0)
    changes = fold([*lifecycle().values(), other])
    assert set(changes) == {CASE, "SL-2026-0008"}
    assert changes["SL-2026-0008"].event_count == 1
    assert changes["SL-2026-0008"].stage == "filed"


def test_the_first_value_of_a_field_wins_when_two_events_set_it() -> None:
    base = dict(case_event("filed", CASE).data)
    first = case_event("filed", CASE, time_=T0, data={**base, "title": "first title"})
    second = case_event(
        "filed", CASE, time_=T0 + timedelta(minutes=5), data={**base, "title": "second title"}
    )

    change = fold([first, second])[CASE]

    assert change.values["title"] == "first title"
    assert change.values["filed_at"] == T0
    assert change.event_count == 2


def test_the_first_township_wins_over_a_later_one() -> None:
    base = dict(case_event("filed", CASE).data)
    first = case_event("filed", CASE, time_=T0, data={**base, "township": "shilou"})
    second = case_event("filed", CASE, time_=T0, data={**base, "township": "nancun"})

    assert fold([first, second])[CASE].values["township"] == "shilou"
    assert fold([second, first])[CASE].values["township"] == "nancun"


def test_an_empty_value_is_filled_by_a_later_event() -> None:
    base = dict(case_event("filed", CASE).data)
    first = case_event("filed", CASE, time_=T0, data={**base, "case_number": None})
    second = case_event("filed", CASE, time_=T0, data={**base, "case_number": "石综执立〔2026〕7号"})

    assert fold([first, second])[CASE].values["case_number"] == "石综执立〔2026〕7号"


@pytest.mark.parametrize("decided_first", [False, True], ids=["filed-first", "decided-first"])
def test_a_major_decision_makes_the_case_major_even_if_the_filing_said_not(decided_first: bool) -> None:
    base = dict(case_event("filed", CASE).data)
    filed = case_event("filed", CASE, time_=T0, data={**base, "requires_legal_review": False})
    major = decided(time_=T0 + timedelta(hours=1), data={**DECIDED_DATA, "major_case": True})

    change = fold([major, filed] if decided_first else [filed, major])[CASE]

    assert change.values["requires_legal_review"] is True


def test_a_decision_that_is_not_major_keeps_what_the_filing_said() -> None:
    base = dict(case_event("filed", CASE).data)
    minor = decided(time_=T0 + timedelta(hours=1), data={**DECIDED_DATA, "major_case": False})
    for flag in (False, True):
        filed = case_event("filed", CASE, time_=T0, data={**base, "requires_legal_review": flag})
        assert fold([filed, minor])[CASE].values["requires_legal_review"] is flag
        assert fold([minor, filed])[CASE].values["requires_legal_review"] is flag


@pytest.mark.parametrize(
    ("old_kind", "new_kind"), list(itertools.permutations(["filed", "decided", "closed"], 2))
)
def test_the_stage_never_moves_backwards(old_kind: str, new_kind: str) -> None:
    events = lifecycle()
    old, new = apply(events[old_kind]), apply(events[new_kind])

    merged = merge(old, new)

    assert merged.stage_rank == max(old.stage_rank, new.stage_rank)
    assert merged.stage == (new.stage if new.stage_rank > old.stage_rank else old.stage)


@pytest.mark.parametrize("name", sorted(EVENT_STAGES))
def test_each_stage_event_moves_a_filed_case_to_its_stage_or_keeps_a_later_one(name: str) -> None:
    event = decided() if name == "decided" else sampled(f"case.{name}.v1")
    stage = EVENT_STAGES[name]

    change = apply(event)
    after_filing = fold([case_event("filed", CASE, time_=T0), event])[CASE]

    assert (change.stage, change.stage_rank) == (stage, STAGE_RANKS[stage])
    expected = stage if STAGE_RANKS[stage] > STAGE_RANKS["filed"] else "filed"
    assert after_filing.stage == expected
    assert after_filing.stage_rank == STAGE_RANKS[expected]


def test_a_late_filed_event_does_not_reopen_a_closed_case() -> None:
    events = lifecycle()
    change = fold([events["closed"], events["filed"]])[CASE]
    assert (change.stage, change.stage_rank) == ("closed", STAGE_RANKS["closed"])
    assert change.values["township"] == "shilou"


NON_MOVING = sorted(
    t.removeprefix(TYPE_PREFIX)
    for t in CASE_TYPES
    if t.removeprefix(TYPE_PREFIX).split(".")[1] not in EVENT_STAGES
)


def test_publication_and_reconsideration_do_not_move_a_case() -> None:
    assert {"case.published.v1", "case.reconsideration_filed.v1"} <= set(NON_MOVING)


@pytest.mark.parametrize("short_type", NON_MOVING)
def test_an_event_that_does_not_move_a_case_keeps_the_stage_and_only_counts(short_type: str) -> None:
    events = lifecycle()
    before = fold([events["filed"], events["decided"]])[CASE]
    later = sampled(short_type, time_=T0 + timedelta(hours=5))

    after = fold([events["filed"], events["decided"], later])[CASE]

    assert apply(later).stage_rank == 0
    assert (after.stage, after.stage_rank) == (before.stage, before.stage_rank)
    assert (after.stage, after.stage_rank) == ("decided", STAGE_RANKS["decided"])
    assert after.event_count == before.event_count + 1
    kept = {k: v for k, v in after.values.items() if k not in RECONSIDERATION_COLUMNS}
    assert kept == dict(before.values)
    assert after.last_event_at == later.time


RECONSIDERATION_COLUMNS = ("reconsideration_filed_at", "reconsideration_result")


def test_a_reconsideration_keeps_its_filing_time_and_its_first_result() -> None:
    events = lifecycle()
    brought = sampled("case.reconsideration_filed.v1", time_=T0 + timedelta(days=20))
    revoked = sampled("case.reconsideration_decided.v1", time_=T0 + timedelta(days=70))
    revoked = replace(revoked, data={**revoked.data, "result": "revoked"})
    upheld = replace(revoked, data={**revoked.data, "result": "upheld"})

    after = fold([revoked, events["filed"], brought, upheld])[CASE]

    assert after.values["reconsideration_filed_at"] == brought.time
    assert after.values["reconsideration_result"] == "revoked"


def test_a_case_known_only_from_events_that_do_not_move_it_has_the_lowest_stage() -> None:
    change = fold([sampled("case.published.v1"), sampled("case.reconsideration_filed.v1")])[CASE]
    row = change.as_row()
    assert (row["stage"], row["stage_rank"], row["event_count"]) == ("lead", 0, 2)


def test_the_last_event_time_is_the_latest_occurrence_not_the_last_arrival() -> None:
    events = lifecycle()
    change = fold([events["closed"], events["filed"], events["decided"]])[CASE]
    assert change.last_event_at == events["closed"].time


@pytest.mark.parametrize("kind", ["filed", "decided", "closed", "published"])
def test_a_row_has_exactly_the_columns_of_the_cases_table(kind: str) -> None:
    if kind == "decided":
        event = decided()
    elif kind == "published":
        event = sampled("case.published.v1")
    else:
        event = case_event(kind, CASE)
    row = apply(event).as_row()
    assert set(row) == set(cases.c.keys())


def test_a_change_is_frozen() -> None:
    change: CaseChange = apply(case_event("closed", CASE))
    with pytest.raises(AttributeError):
        change.stage = "filed"  # type: ignore[misc]


def test_the_catalog_has_many_case_event_types() -> None:
    assert len(CASE_TYPES) > 3
    assert {TYPE_PREFIX + f"case.{k}.v1" for k in ("filed", "decided", "closed")} <= set(CASE_TYPES)


@pytest.mark.parametrize("event_type", CASE_TYPES)
def test_handles_is_true_for_each_case_event_type(event_type: str) -> None:
    assert handles(event_type)


@pytest.mark.parametrize("event_type", ["cn.gov.liandong.case.reopened.v1", "cn.gov.liandong.case.filed.v9"])
def test_handles_goes_by_the_area_prefix_since_unknown_types_never_reach_projections(event_type: str) -> None:
    # The codec rejects types outside the catalog, so the registry needs no list of its own.
    assert event_type not in CATALOG.kinds
    assert handles(event_type)


@pytest.mark.parametrize(
    "event_type",
    [
        "case.filed.v1",
        "cn.gov.liandong.request.filed.v1",
        "cn.gov.liandong.transfer.requested.v1",
        "cn.gov.liandong.cases.filed.v1",
        "cn.gov.liandong.case",
        "",
    ],
)
def test_handles_is_false_for_any_other_type(event_type: str) -> None:
    assert not handles(event_type)
