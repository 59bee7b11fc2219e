"""Pausing a clock: time between a pause event and its resume does not count against the deadline."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from events.calendar import WorkingDayCalendar
from events.clock_rules import ClockRules
from projections import clocks as engine
from tests.support import case_event, catalog_event

CN = timezone(timedelta(hours=8))
RULES = ClockRules.load()
RULE = RULES.rules["case.decision"]
CALENDAR = WorkingDayCalendar.load()
FILED = datetime(2025, 3, 3, 10, 0, tzinfo=CN)
GRACE, REESCALATE = timedelta(seconds=60), timedelta(hours=48)


def decision_clock(*events: object) -> engine.ClockState:
    state = engine.ClockState("c", RULE.id, "case", "SL-P", "")
    for event in sorted(events, key=lambda e: e.time):  # type: ignore[attr-defined]
        role = RULE.role(event)  # type: ignore[arg-type]
        assert role is not None
        state = engine.apply(state, RULE, role, event)  # type: ignore[arg-type]
    return state


def test_the_decision_clock_names_its_pause_and_resume_events() -> None:
    assert RULE.role(catalog_event("case.hearing_requested.v1", "X")) == "pause"
    assert RULE.role(catalog_event("case.hearing_held.v1", "X")) == "resume"


def test_a_paused_clock_raises_nothing_and_waits_for_its_resume() -> None:
    state = decision_clock(
        case_event("filed", "SL-P", time_=FILED),
        catalog_event("case.hearing_requested.v1", "SL-P", time_=FILED + timedelta(days=30)),
    )
    plan = engine.schedule(state, RULE, RULES, CALENDAR)
    assert state.paused
    far_past_deadline = FILED + timedelta(days=200)
    assert engine.due(state, RULE, plan, far_past_deadline, GRACE, REESCALATE) == []
    assert engine.next_check(state, RULE, plan, GRACE, REESCALATE) is None


def test_the_hearing_time_moves_the_deadline_back_by_exactly_its_length() -> None:
    filed = case_event("filed", "SL-P", time_=FILED)
    plain = engine.schedule(decision_clock(filed), RULE, RULES, CALENDAR)
    paused = decision_clock(
        filed,
        catalog_event("case.hearing_requested.v1", "SL-P", time_=FILED + timedelta(days=30)),
        catalog_event("case.hearing_held.v1", "SL-P", time_=FILED + timedelta(days=42)),
    )
    moved = engine.schedule(paused, RULE, RULES, CALENDAR)
    assert plain is not None
    assert moved is not None
    assert not paused.paused
    assert moved.deadline - plain.deadline == timedelta(days=12)
    # A day after the unpaused deadline, the paused clock is only at the yellow rung.
    actions = engine.due(paused, RULE, moved, plain.deadline + timedelta(days=1), GRACE, REESCALATE)
    assert [a.level for a in actions] == ["yellow"]


def test_a_pause_from_before_the_clock_started_does_not_count() -> None:
    state = decision_clock(
        catalog_event("case.hearing_requested.v1", "SL-P", time_=FILED - timedelta(days=5)),
        case_event("filed", "SL-P", time_=FILED),
    )
    assert not state.paused
    assert state.paused_for == timedelta(0)
