"""The case registry's pure fold: order-independent, first value wins, stages only move forward."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from events.envelope import Envelope
from projections.case_registry import CaseChange, apply, fold, handles, merge
from projections.schema import cases
from tests.support import case_event

CASE = "SL-2026-0007"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def lifecycle() -> dict[str, Envelope]:
    """Filed, decided and closed, an hour apart, in that order of occurrence."""
    return {
        kind: case_event(kind, CASE, time_=T0 + timedelta(hours=hour))
        for hour, kind in enumerate(["filed", "decided", "closed"])
    }


ORDERS = list(itertools.permutations(["filed", "decided", "closed"]))


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_every_arrival_order_of_filed_decided_closed_folds_to_the_same_closed_row(
    order: tuple[str, ...],
) -> None:
    events = lifecycle()
    in_order = fold(events[k] for k in ("filed", "decided", "closed"))[CASE]

    change = fold(events[k] for k in order)[CASE]

    assert change.stage == "closed"
    assert change.stage_rank == 3
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


def test_an_empty_value_is_filled_by_a_later_event() -> None:
    base = dict(case_event("filed", CASE).data)
    first = case_event("filed", CASE, time_=T0, data={**base, "case_number": None})
    second = case_event("filed", CASE, time_=T0, data={**base, "case_number": "石综执立〔2026〕7号"})

    assert fold([first, second])[CASE].values["case_number"] == "石综执立〔2026〕7号"


def test_a_false_value_is_a_value_and_is_not_overwritten_by_a_later_true() -> None:
    base = dict(case_event("filed", CASE).data)
    first = case_event("filed", CASE, data={**base, "requires_legal_review": False})
    second = case_event("filed", CASE, data={**base, "requires_legal_review": True})

    assert fold([first, second])[CASE].values["requires_legal_review"] is False


@pytest.mark.parametrize(
    ("old_kind", "new_kind"), list(itertools.permutations(["filed", "decided", "closed"], 2))
)
def test_the_stage_never_moves_backwards(old_kind: str, new_kind: str) -> None:
    events = lifecycle()
    old, new = apply(events[old_kind]), apply(events[new_kind])

    merged = merge(old, new)

    assert merged.stage_rank == max(old.stage_rank, new.stage_rank)
    assert merged.stage == (new.stage if new.stage_rank > old.stage_rank else old.stage)


def test_a_late_filed_event_does_not_reopen_a_closed_case() -> None:
    events = lifecycle()
    change = fold([events["closed"], events["filed"]])[CASE]
    assert (change.stage, change.stage_rank) == ("closed", 3)
    assert change.values["township"] == "shilou"


def test_the_last_event_time_is_the_latest_occurrence_not_the_last_arrival() -> None:
    events = lifecycle()
    change = fold([events["closed"], events["filed"], events["decided"]])[CASE]
    assert change.last_event_at == events["closed"].time


@pytest.mark.parametrize("kind", ["filed", "decided", "closed"])
def test_a_row_has_exactly_the_columns_of_the_cases_table(kind: str) -> None:
    row = apply(case_event(kind, CASE)).as_row()
    assert set(row) == set(cases.c.keys())


def test_a_change_is_frozen() -> None:
    change: CaseChange = apply(case_event("closed", CASE))
    with pytest.raises(AttributeError):
        change.stage = "filed"  # type: ignore[misc]


@pytest.mark.parametrize(
    "event_type",
    ["cn.gov.liandong.case.filed.v1", "cn.gov.liandong.case.decided.v1", "cn.gov.liandong.case.closed.v1"],
)
def test_handles_is_true_for_each_case_event_type(event_type: str) -> None:
    assert handles(event_type)


@pytest.mark.parametrize(
    "event_type",
    [
        "cn.gov.liandong.case.reopened.v1",
        "cn.gov.liandong.case.filed.v2",
        "case.filed.v1",
        "cn.gov.liandong.request.filed.v1",
        "",
    ],
)
def test_handles_is_false_for_any_other_type(event_type: str) -> None:
    assert not handles(event_type)
