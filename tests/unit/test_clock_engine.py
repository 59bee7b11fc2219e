"""The pure clock engine (projections/clocks.py) and its rules (events/clocks.json).

Time is always passed in: nothing here reads the wall clock. Expected deadlines are worked out by hand
from the State Council schedules (DOMAIN.md, "Working days in China"), not by the code under test:

- 2025 Dragon Boat: Saturday 31 May to Monday 2 June off.
- 2025 National Day + Mid-Autumn: 1-8 October off; Sunday 28 September and Saturday 11 October worked.
- 2026 Spring Festival: 15-23 February off; Saturdays 14 and 28 February worked.

A deadline is the end of a China day, 23:59:59+08:00, which is 15:59:59 UTC the same day (`eod`).
Tests about a year without official data pin the package's coverage to 2026 (`OFFICIAL_TO_2026`),
so they keep testing the mechanism after a chinese-calendar release learns 2027.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from events.calendar import WorkingDayCalendar, package_schedule
from events.clock_rules import DEFAULT_PATH, ClockRule, ClockRules, Ladder
from events.envelope import Envelope
from projections.clocks import (
    Action,
    ClockState,
    Schedule,
    alert_id,
    apply,
    clock_id,
    due,
    next_check,
    parties,
    schedule,
    touched,
)
from tests.support import catalog_event

CN = timezone(timedelta(hours=8))
GRACE = timedelta(minutes=5)
REESCALATE = timedelta(hours=24)
SECOND = timedelta(seconds=1)
OFFICIAL_TO_2026 = package_schedule().through(2026)
NO_EXTRA: dict[str, Any] = {"version": 1, "years": {}}
# Invented for the tests: 2027's schedule is not official as of this writing.
INVENTED_2027: dict[str, Any] = {
    "version": 1,
    "years": {
        "2027": {
            "holidays": ["2027-01-01"],
            "workdays": [],
            "source": "invented test data, not a State Council notice",
        }
    },
}
ALL_OUTCOMES = ("penalty", "no_penalty", "not_established", "transferred_to_judicial", "other")
POLICE = "shilou.police-station"
MARKET = "shilou.market-supervision-office"
OFFICE = "shilou.enforcement-office"
SOME_TIME = datetime(2025, 6, 9, 2, 0, tzinfo=UTC)  # for tests where the time does not matter


# --------------------------------------------------------------------------------------------- helpers


def cn(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> datetime:
    """A moment on the China wall clock, as the UTC time an event carries."""
    return datetime(y, m, d, hh, mm, ss, tzinfo=CN).astimezone(UTC)


def eod(y: int, m: int, d: int) -> datetime:
    """The end of a China day (23:59:59+08:00), written out in UTC by hand."""
    return datetime(y, m, d, 15, 59, 59, tzinfo=UTC)


@pytest.fixture(scope="module")
def rules() -> ClockRules:
    return ClockRules.load()


@pytest.fixture(scope="module")
def calendar() -> WorkingDayCalendar:
    return WorkingDayCalendar.load()


def envelope(
    short_type: str, subject: str, *, time_: datetime, source: str = OFFICE, **data: Any
) -> Envelope:
    """`catalog_event` with its JSON-side overrides: dates are written YYYY-MM-DD, as a unit sends them."""
    raw = {k: v.isoformat() if isinstance(v, date) else v for k, v in data.items()}
    return catalog_event(short_type, subject, source=source, time_=time_, **raw)


def fresh(rule: ClockRule, subject: str, party: str = "", responsible: str | None = None) -> ClockState:
    return ClockState(
        clock_id(rule.id, rule.area, subject, party), rule.id, rule.area, subject, party, responsible
    )


def run(rule: ClockRule, *events: Envelope, state: ClockState | None = None) -> ClockState:
    """Apply `events` in the order given, each in the role the rule gives it (ignoring the others)."""
    current = state or fresh(rule, events[0].subject)
    for event in events:
        role = rule.role(event)
        if role is not None:
            current = apply(current, rule, role, event)
    return current


def plan_of(state: ClockState, rule: ClockRule, rules: ClockRules, calendar: Any) -> Schedule:
    plan = schedule(state, rule, rules, calendar)
    assert plan is not None, f"{rule.id} has no schedule for {state}"
    return plan


def assistance_requested(at: datetime, subject: str = "AS-2025-001", **data: Any) -> Envelope:
    data.setdefault("reply_by", None)
    return envelope("assistance.requested.v1", subject, source=OFFICE, time_=at, to_unit=POLICE, **data)


def assistance_accepted(at: datetime, subject: str = "AS-2025-001") -> Envelope:
    return envelope("assistance.accepted.v1", subject, source=POLICE, time_=at)


def write_rules(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> Path:
    doc = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    mutate(doc)
    path = tmp_path / "clocks.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def rule_in(doc: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in doc["rules"] if r["id"] == rule_id)


# ------------------------------------------------------------------------------ 1. loading the rules


def test_the_shipped_rules_load_twenty_four_rules_each_with_a_citation(rules: ClockRules) -> None:
    assert len(rules.rules) == 24
    assert all(rule.id == key for key, rule in rules.rules.items())
    uncited = [r.id for r in rules.rules.values() if not r.citation.strip()]
    assert uncited == []


def test_the_shipped_ladder_warns_at_three_quarters_and_escalates_to_the_justice_bureau(
    rules: ClockRules,
) -> None:
    assert rules.ladder == Ladder(0.75, 3, "district.justice-bureau")


def test_length_is_the_rule_length_unless_the_responsible_unit_has_an_override(tmp_path: Path) -> None:
    def shorten(doc: dict[str, Any]) -> None:
        doc["overrides"] = [{"rule": "assistance.reply", "unit": POLICE, "length": 1, "citation": "test"}]

    custom = ClockRules.load(write_rules(tmp_path, shorten))
    reply = custom.rules["assistance.reply"]
    assert custom.length(reply, POLICE) == 1
    assert custom.length(reply, MARKET) == 2
    assert custom.length(reply, None) == 2


def test_the_shipped_override_for_market_supervision_filing_is_loaded(rules: ClockRules) -> None:
    filing = rules.rules["case.filing_decision"]
    assert rules.overrides == {("case.filing_decision", MARKET): 15}
    assert rules.length(filing, MARKET) == 15


def test_a_unit_override_changes_the_scheduled_deadline(tmp_path: Path, calendar: WorkingDayCalendar) -> None:
    def shorten(doc: dict[str, Any]) -> None:
        doc["overrides"] = [{"rule": "assistance.reply", "unit": POLICE, "length": 1, "citation": "test"}]

    custom = ClockRules.load(write_rules(tmp_path, shorten))
    reply = custom.rules["assistance.reply"]
    request = assistance_requested(cn(2025, 6, 13, 10))  # a Friday
    for_police = run(reply, request, state=fresh(reply, request.subject, responsible=POLICE))
    for_market = run(reply, request, state=fresh(reply, request.subject, responsible=MARKET))
    assert plan_of(for_police, reply, custom, calendar).deadline == eod(2025, 6, 16)  # Monday
    assert plan_of(for_market, reply, custom, calendar).deadline == eod(2025, 6, 17)  # Tuesday


def _unknown_kind(doc: dict[str, Any]) -> None:
    rule_in(doc, "assistance.reply")["kind"] = "reminder"


def _unknown_unit(doc: dict[str, Any]) -> None:
    rule_in(doc, "assistance.reply")["unit"] = "fortnights"


def _check_without_from_field(doc: dict[str, Any]) -> None:
    del rule_in(doc, "transfer.send")["from_field"]


def _notice_without_date_field(doc: dict[str, Any]) -> None:
    del rule_in(doc, "case.hearing_notice")["date_field"]


def _no_citation(doc: dict[str, Any]) -> None:
    rule_in(doc, "case.payment")["citation"] = ""


def _override_for_unknown_rule(doc: dict[str, Any]) -> None:
    doc["overrides"].append({"rule": "case.no_such_rule", "unit": MARKET, "length": 3, "citation": "x"})


def _duplicate_rule(doc: dict[str, Any]) -> None:
    doc["rules"].append(copy.deepcopy(rule_in(doc, "case.service")))


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (_unknown_kind, "'assistance.reply'"),
        (_unknown_unit, "'assistance.reply'"),
        (_check_without_from_field, "'transfer.send'"),
        (_notice_without_date_field, "'case.hearing_notice'"),
        (_no_citation, "'case.payment'"),
        (_override_for_unknown_rule, "case.no_such_rule"),
        (_duplicate_rule, "case.service"),
    ],
    ids=[
        "unknown kind",
        "unknown unit",
        "check without from_field",
        "notice without date_field",
        "rule without citation",
        "override for unknown rule",
        "rule listed twice",
    ],
)
def test_a_bad_rules_document_is_refused_with_an_error_naming_the_rule(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], named: str
) -> None:
    path = write_rules(tmp_path, mutate)
    with pytest.raises(ValueError, match=re.escape(named)):
        ClockRules.load(path)


# ------------------------------------------------------------------------------ 2. triggers and roles


@pytest.mark.parametrize("outcome", ALL_OUTCOMES)
def test_a_penalty_decision_starts_publication_and_any_other_decision_starts_publication_other(
    rules: ClockRules, outcome: str
) -> None:
    decided = envelope("case.decided.v2", "SL-2025-0001", time_=SOME_TIME, outcome=outcome)
    publication = rules.rules["case.publication"]
    publication_other = rules.rules["case.publication_other"]
    assert publication.start[0].matches(decided) is (outcome == "penalty")
    assert publication_other.start[0].matches(decided) is (outcome != "penalty")
    assert publication.role(decided) == ("start" if outcome == "penalty" else None)
    assert publication_other.role(decided) == (None if outcome == "penalty" else "start")


@pytest.mark.parametrize(
    ("decision", "role"), [("transfer", "start"), ("no_transfer", None), ("other", None)]
)
def test_the_24_hour_handover_starts_only_when_the_decision_is_to_transfer(
    rules: ClockRules, decision: str, role: str | None
) -> None:
    decided = envelope("criminal_transfer.decided.v1", "CT-2025-0001", time_=SOME_TIME, decision=decision)
    assert rules.rules["criminal_transfer.handover"].role(decided) == role
    # The 3-day check on the decision itself is measured whatever was decided.
    assert rules.rules["criminal_transfer.decision"].role(decided) == "start"


@pytest.mark.parametrize(
    ("rule_id", "short_type", "role"),
    [
        ("supervision.reply", "supervision.order_issued.v1", "start"),
        ("supervision.reply", "supervision.order_replied.v1", "stop"),
        ("supervision.reply", "supervision.order_reopened.v1", "reset"),
        ("case.decision", "case.filed.v1", "start"),
        ("case.decision", "case.decided.v2", "stop"),
        ("case.decision", "case.closed.v1", "stop"),
        ("case.decision", "case.decision_deadline_extended.v1", "extend"),
        ("case.decision", "case.lead_received.v1", None),
    ],
)
def test_each_event_plays_its_role_on_the_clock(
    rules: ClockRules, rule_id: str, short_type: str, role: str | None
) -> None:
    event = envelope(short_type, "SUBJ-1", time_=SOME_TIME)
    assert rules.rules[rule_id].role(event) == role


def test_an_event_of_another_area_with_the_same_name_plays_no_role(rules: ClockRules) -> None:
    assistance_request = assistance_requested(cn(2025, 6, 13, 10))
    assert rules.rules["transfer.acceptance"].role(assistance_request) is None
    assert rules.rules["consultation.acceptance"].role(assistance_request) is None
    assert rules.rules["assistance.reply"].role(assistance_request) == "start"


def test_a_transfer_request_starts_the_send_check_matching_its_urgency(rules: ClockRules) -> None:
    normal = envelope("transfer.requested.v1", "TR-1", time_=SOME_TIME, urgent=False)
    urgent = envelope("transfer.requested.v1", "TR-2", time_=SOME_TIME, urgent=True)
    assert rules.rules["transfer.send"].role(normal) == "start"
    assert rules.rules["transfer.send_urgent"].role(normal) is None
    assert rules.rules["transfer.send"].role(urgent) is None
    assert rules.rules["transfer.send_urgent"].role(urgent) == "start"


# ------------------------------------------------------------------------------ 3. deadlines


def test_a_two_working_day_assistance_reply_started_on_a_friday_is_due_on_tuesday(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    reply = rules.rules["assistance.reply"]
    state = run(reply, assistance_requested(cn(2025, 6, 13, 10)))  # Friday 13 June 2025
    plan = plan_of(state, reply, rules, calendar)
    # Saturday 14 and Sunday 15 do not count; Monday 16 is day 1, Tuesday 17 is day 2.
    assert plan.deadline == eod(2025, 6, 17)
    assert plan.deadline == datetime(2025, 6, 17, 23, 59, 59, tzinfo=CN)
    assert plan.provisional is False


def test_a_transfer_acceptance_across_national_day_ends_on_the_make_up_saturday(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    acceptance = rules.rules["transfer.acceptance"]
    requested = envelope("transfer.requested.v1", "TR-2025-0930", time_=cn(2025, 9, 30, 10))
    plan = plan_of(run(acceptance, requested), acceptance, rules, calendar)
    # 1-8 October off; Thursday 9 (1), Friday 10 (2), make-up Saturday 11 (3).
    assert plan.deadline == eod(2025, 10, 11)
    # Escalation: Sunday 12 off; Monday 13 (1), Tuesday 14 (2), Wednesday 15 (3).
    assert plan.thresholds["escalated"] == eod(2025, 10, 15)
    assert plan.provisional is False


def test_the_decision_clock_runs_ninety_calendar_days_from_filing(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    decision = rules.rules["case.decision"]
    filed = envelope("case.filed.v1", "SL-2025-0401", time_=cn(2025, 4, 1, 10))
    plan = plan_of(run(decision, filed), decision, rules, calendar)
    # 29 days to 30 April, 31 to 31 May (60), 30 to 30 June (90): a Monday, a working day.
    assert plan.deadline == eod(2025, 6, 30)


def test_a_ninety_day_decision_clock_ending_in_a_holiday_ends_on_the_next_working_day(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    decision = rules.rules["case.decision"]
    filed = envelope("case.filed.v1", "SL-2025-0303", time_=cn(2025, 3, 3, 10))
    plan = plan_of(run(decision, filed), decision, rules, calendar)
    # 90 days after 3 March is Sunday 1 June, inside the Dragon Boat break (31 May - 2 June).
    assert plan.deadline == eod(2025, 6, 3)


def test_a_reply_by_date_in_the_assistance_request_replaces_the_two_working_days(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    reply = rules.rules["assistance.reply"]
    state = run(reply, assistance_requested(cn(2025, 6, 13, 10), reply_by=date(2025, 6, 20)))
    plan = plan_of(state, reply, rules, calendar)
    assert plan.deadline == eod(2025, 6, 20)
    # The escalation rung still counts working days: Mon 23 (1), Tue 24 (2), Wed 25 (3).
    assert plan.thresholds["escalated"] == eod(2025, 6, 25)


def test_an_approved_extension_moves_the_decision_deadline_to_the_new_date(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    decision = rules.rules["case.decision"]
    filed = envelope("case.filed.v1", "SL-2025-0401", time_=cn(2025, 4, 1, 10))
    extended = envelope(
        "case.decision_deadline_extended.v1",
        "SL-2025-0401",
        time_=cn(2025, 6, 20, 10),
        new_deadline=date(2025, 7, 30),
    )
    plan = plan_of(run(decision, filed, extended), decision, rules, calendar)
    assert plan.deadline == eod(2025, 7, 30)
    # Thursday 31 July (1), Friday 1 August (2), Monday 4 August (3).
    assert plan.thresholds["escalated"] == eod(2025, 8, 4)


def test_extensions_never_shorten_the_deadline_and_the_latest_date_wins_in_any_order(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    decision = rules.rules["case.decision"]
    subject = "SL-2025-0401"
    filed = envelope("case.filed.v1", subject, time_=cn(2025, 4, 1, 10))

    def extension(day: date, at: datetime) -> Envelope:
        return envelope("case.decision_deadline_extended.v1", subject, time_=at, new_deadline=day)

    earlier = extension(date(2025, 6, 15), cn(2025, 6, 1, 10))
    later = extension(date(2025, 8, 29), cn(2025, 6, 2, 10))
    assert plan_of(run(decision, filed, earlier), decision, rules, calendar).deadline == eod(2025, 6, 30)
    for order in itertools.permutations([filed, earlier, later]):
        state = run(decision, *order, state=fresh(decision, subject))
        assert plan_of(state, decision, rules, calendar).deadline == eod(2025, 8, 29)


def test_the_handover_to_the_police_is_due_24_hours_later_even_on_a_holiday(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    handover = rules.rules["criminal_transfer.handover"]
    decided = envelope(
        "criminal_transfer.decided.v1", "CT-2025-1001", time_=cn(2025, 10, 1, 10), decision="transfer"
    )
    plan = plan_of(run(handover, decided), handover, rules, calendar)
    assert plan.deadline == cn(2025, 10, 2, 10)
    assert plan.deadline == datetime(2025, 10, 2, 2, 0, tzinfo=UTC)
    assert plan.thresholds["yellow"] == cn(2025, 10, 2, 4)  # 18 of the 24 hours
    # Escalation counts working days after 2 October: 9 (1), 10 (2), make-up Saturday 11 (3).
    assert plan.thresholds["escalated"] == eod(2025, 10, 11)


@pytest.mark.parametrize(
    ("served", "expected"),
    [
        (cn(2025, 3, 15, 10), eod(2025, 9, 15)),
        (cn(2025, 1, 31, 10), eod(2025, 7, 31)),  # July has a 31st: nothing to clamp
        # 31 August + 6 months has no 31 February: the window ends on the last day of February.
        # Saturday 28 February 2026 is a make-up working day, so no holiday rule applies.
        (cn(2025, 8, 31, 10), eod(2026, 2, 28)),
        # A leap year: 31 August 2023 + 6 months is 29 February 2024 (a Thursday).
        (cn(2023, 8, 31, 10), eod(2024, 2, 29)),
    ],
    ids=[
        "mid-month",
        "31 Jan to 31 Jul",
        "31 Aug clamps to 28 Feb",
        "31 Aug clamps to 29 Feb in a leap year",
    ],
)
def test_the_lawsuit_window_is_six_calendar_months(
    rules: ClockRules, calendar: WorkingDayCalendar, served: datetime, expected: datetime
) -> None:
    window = rules.rules["case.lawsuit_window"]
    state = run(window, envelope("case.decision_served.v1", "SL-2025-0002", time_=served))
    assert plan_of(state, window, rules, calendar).deadline == expected


def test_a_six_month_window_ending_on_a_public_holiday_ends_on_the_next_working_day(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    """PRODUCT BUG (projections/clocks.py `_add`, the "months" branch): month periods ignore holidays.

    Administrative Litigation Law Art. 101 applies the Civil Procedure Law's period rule (Art. 85): a
    period whose last day is a statutory holiday ends on the first day after it, the rule the engine
    already applies to calendar-day periods (`WorkingDayCalendar.add_calendar_days`, Civil Code
    Art. 203). Served 1 April 2025, six months end on 1 October 2025, National Day: the window runs to
    Thursday 9 October.
    """
    window = rules.rules["case.lawsuit_window"]
    served = envelope("case.decision_served.v1", "SL-2025-0003", time_=cn(2025, 4, 1, 10))
    assert plan_of(run(window, served), window, rules, calendar).deadline == eod(2025, 10, 9)


def test_a_six_month_window_into_february_2100_clamps_to_the_28th_because_2100_is_not_a_leap_year(
    rules: ClockRules,
) -> None:
    """PRODUCT BUG (projections/clocks.py `_add`, months branch): `year % 4 == 0` treats 2100 as a
    leap year, so `date(2100, 2, 29)` raises ValueError instead of giving 28 February 2100.

    28 February 2100 is a Sunday; invented data makes it a working day, so that this test does not
    depend on whether month periods are extended past days off (the test above).
    """
    sunday_worked = {"version": 1, "years": {"2100": {"holidays": [], "workdays": ["2100-02-28"]}}}
    calendar = WorkingDayCalendar.from_mapping(sunday_worked, package=OFFICIAL_TO_2026)
    window = rules.rules["case.lawsuit_window"]
    served = envelope("case.decision_served.v1", "SL-2099-0001", time_=cn(2099, 8, 31, 10))
    assert plan_of(run(window, served), window, rules, calendar).deadline == eod(2100, 2, 28)


def test_a_clock_running_into_a_year_without_official_data_is_provisional_until_the_data_arrives(
    rules: ClockRules,
) -> None:
    reply = rules.rules["assistance.reply"]
    state = run(reply, assistance_requested(cn(2026, 12, 28, 10), subject="AS-2026-1228"))
    without_2027 = WorkingDayCalendar.from_mapping(NO_EXTRA, package=OFFICIAL_TO_2026)
    with_2027 = WorkingDayCalendar.from_mapping(INVENTED_2027, package=OFFICIAL_TO_2026)

    guessed = plan_of(state, reply, rules, without_2027)
    known = plan_of(state, reply, rules, with_2027)
    # Tuesday 29 (1), Wednesday 30 (2): days the 2027 notice could still move, until it is known.
    assert guessed.deadline == known.deadline == eod(2026, 12, 30)
    assert guessed.provisional is True
    assert known.provisional is False
    assert without_2027.version != with_2027.version
    # Escalation: Thursday 31 (1); Friday 1 January is a guessed working day (2) until the data
    # says it is a holiday; then Monday 4 (2) and Tuesday 5 (3).
    assert guessed.thresholds["escalated"] == eod(2027, 1, 4)
    assert known.thresholds["escalated"] == eod(2027, 1, 5)


def test_a_provisional_working_day_deadline_moves_when_the_next_year_is_published(
    rules: ClockRules,
) -> None:
    acceptance = rules.rules["transfer.acceptance"]
    requested = envelope("transfer.requested.v1", "TR-2026-1229", time_=cn(2026, 12, 29, 10))
    state = run(acceptance, requested)
    guessed = plan_of(
        state, acceptance, rules, WorkingDayCalendar.from_mapping(NO_EXTRA, package=OFFICIAL_TO_2026)
    )
    known = plan_of(
        state, acceptance, rules, WorkingDayCalendar.from_mapping(INVENTED_2027, package=OFFICIAL_TO_2026)
    )
    # Wednesday 30 (1), Thursday 31 (2), then Friday 1 January (guessed) or Monday 4 (known holiday).
    assert (guessed.deadline, guessed.provisional) == (eod(2027, 1, 1), True)
    assert (known.deadline, known.provisional) == (eod(2027, 1, 4), False)


def test_a_fixed_deadline_is_still_provisional_when_its_escalation_rung_reaches_unofficial_days(
    rules: ClockRules,
) -> None:
    reply = rules.rules["assistance.reply"]
    request = assistance_requested(cn(2026, 12, 21, 10), subject="AS-2026-1221", reply_by=date(2026, 12, 23))
    state = run(reply, request)
    guessed = plan_of(
        state, reply, rules, WorkingDayCalendar.from_mapping(NO_EXTRA, package=OFFICIAL_TO_2026)
    )
    known = plan_of(
        state, reply, rules, WorkingDayCalendar.from_mapping(INVENTED_2027, package=OFFICIAL_TO_2026)
    )
    # The date in the request is official; the escalation rung counts Thursday 24 (1), Friday 25 (2,
    # a day the 2027 notice could still move) and Monday 28 (3).
    assert guessed.deadline == known.deadline == eod(2026, 12, 23)
    assert guessed.thresholds["escalated"] == known.thresholds["escalated"] == eod(2026, 12, 28)
    assert guessed.provisional is True
    assert known.provisional is False


def test_a_clock_without_a_start_has_no_schedule(rules: ClockRules, calendar: WorkingDayCalendar) -> None:
    reply = rules.rules["assistance.reply"]
    stopped_only = run(reply, assistance_accepted(cn(2025, 6, 16, 10)))
    assert stopped_only.started_at is None
    assert schedule(stopped_only, reply, rules, calendar) is None


# ------------------------------------------------------------------------------ 4. the warning ladder

# An assistance request at Friday 13 June 2025 11:59:59 China time, due Tuesday 17 June 23:59:59:
# a period of exactly 108 hours, so three quarters of it is 81 hours.
LADDER_START = cn(2025, 6, 13, 11, 59, 59)
YELLOW = cn(2025, 6, 16, 20, 59, 59)
RED = eod(2025, 6, 17)
ESCALATED = eod(2025, 6, 20)  # Wednesday 18 (1), Thursday 19 (2), Friday 20 (3)
LEVELS_ALL = ("yellow", "red", "escalated")


@pytest.fixture
def reply_rule(rules: ClockRules) -> ClockRule:
    return rules.rules["assistance.reply"]


@pytest.fixture
def open_reply(reply_rule: ClockRule) -> ClockState:
    return run(reply_rule, assistance_requested(LADDER_START))


@pytest.fixture
def ladder_plan(
    open_reply: ClockState, reply_rule: ClockRule, rules: ClockRules, calendar: WorkingDayCalendar
) -> Schedule:
    return plan_of(open_reply, reply_rule, rules, calendar)


def test_the_ladder_is_yellow_at_three_quarters_red_at_the_deadline_escalated_three_working_days_on(
    ladder_plan: Schedule,
) -> None:
    assert ladder_plan.deadline == RED
    assert dict(ladder_plan.thresholds) == {"yellow": YELLOW, "red": RED, "escalated": ESCALATED}
    assert ladder_plan.thresholds["yellow"] == datetime(2025, 6, 16, 12, 59, 59, tzinfo=UTC)
    assert ladder_plan.thresholds["yellow"] - LADDER_START == timedelta(hours=81)


def test_the_ladder_follows_the_configured_fraction_and_escalation_delay(
    open_reply: ClockState, reply_rule: ClockRule, rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    halfway = replace(rules, ladder=Ladder(0.5, 1, "district.justice-bureau"))
    plan = plan_of(open_reply, reply_rule, halfway, calendar)
    assert plan.thresholds["yellow"] == LADDER_START + timedelta(hours=54)
    assert plan.thresholds["red"] == RED
    assert plan.thresholds["escalated"] == eod(2025, 6, 18)


def test_the_escalation_rung_skips_a_holiday_break_after_the_deadline(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    reply = rules.rules["assistance.reply"]
    # Thursday 25 September 2025: Friday 26 (1), make-up Sunday 28 (2) → due Sunday 28 September.
    plan = plan_of(run(reply, assistance_requested(cn(2025, 9, 25, 10))), reply, rules, calendar)
    assert plan.deadline == eod(2025, 9, 28)
    # Monday 29 (1), Tuesday 30 (2), 1-8 October off, Thursday 9 (3).
    assert plan.thresholds["escalated"] == eod(2025, 10, 9)


# ------------------------------------------------------------------------------ 5. what is due


def test_nothing_is_due_before_the_yellow_threshold_plus_grace(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule
) -> None:
    for now in (LADDER_START, YELLOW, YELLOW + GRACE - SECOND):
        assert due(open_reply, reply_rule, ladder_plan, now, GRACE, REESCALATE) == []


def test_yellow_is_raised_once_the_threshold_plus_grace_has_passed(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule
) -> None:
    actions = due(open_reply, reply_rule, ladder_plan, YELLOW + GRACE, GRACE, REESCALATE)
    assert actions == [Action("raise", "yellow", YELLOW)]


def test_red_is_raised_after_the_deadline_when_yellow_was_already_raised(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule
) -> None:
    warned = replace(open_reply, fired=frozenset({"yellow"}))
    assert due(warned, reply_rule, ladder_plan, RED + GRACE - SECOND, GRACE, REESCALATE) == []
    assert due(warned, reply_rule, ladder_plan, RED + GRACE, GRACE, REESCALATE) == [
        Action("raise", "red", RED)
    ]


def test_after_an_outage_only_the_highest_rung_reached_is_raised(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule
) -> None:
    much_later = ESCALATED + timedelta(days=10)
    assert due(open_reply, reply_rule, ladder_plan, much_later, GRACE, REESCALATE) == [
        Action("raise", "escalated", ESCALATED)
    ]
    between = RED + timedelta(hours=1)
    assert due(open_reply, reply_rule, ladder_plan, between, GRACE, REESCALATE) == [
        Action("raise", "red", RED)
    ]


@pytest.mark.parametrize(
    ("fired", "now"),
    [
        ({"yellow"}, YELLOW + GRACE),
        ({"yellow"}, RED),
        ({"red"}, RED + timedelta(days=1)),
        ({"yellow", "red", "escalated"}, ESCALATED + timedelta(days=30)),
        ({"escalated"}, ESCALATED + timedelta(days=30)),
    ],
)
def test_nothing_is_raised_twice(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule, fired: set[str], now: datetime
) -> None:
    state = replace(open_reply, fired=frozenset(fired))
    assert due(state, reply_rule, ladder_plan, now, GRACE, REESCALATE) == []


@pytest.mark.parametrize(
    ("fired", "stopped_at", "withdrawn_levels"),
    [
        ({"yellow"}, YELLOW - SECOND, ["yellow"]),  # closed before the warning was deserved
        ({"yellow"}, YELLOW, []),  # closed exactly at the threshold: the warning stands
        ({"yellow"}, YELLOW + timedelta(hours=1), []),  # closed after the warning: it stands
        ({"yellow", "red"}, RED - SECOND, ["red"]),  # closed on time: only the red one was wrong
        ({"yellow", "red"}, YELLOW - SECOND, ["red", "yellow"]),
    ],
    ids=[
        "before yellow",
        "exactly at yellow",
        "between yellow and red",
        "yellow and red fired, stop just before red",
        "yellow and red fired, stop before yellow",
    ],
)
def test_a_stop_before_a_fired_rungs_threshold_withdraws_that_rung_only(
    open_reply: ClockState,
    reply_rule: ClockRule,
    ladder_plan: Schedule,
    fired: set[str],
    stopped_at: datetime,
    withdrawn_levels: list[str],
) -> None:
    state = run(
        reply_rule, assistance_accepted(stopped_at), state=replace(open_reply, fired=frozenset(fired))
    )
    assert not state.open
    actions = due(state, reply_rule, ladder_plan, ESCALATED + timedelta(days=1), GRACE, REESCALATE)
    assert actions == [Action("withdraw", lv, ladder_plan.thresholds[lv]) for lv in withdrawn_levels]


def test_a_withdrawn_rung_is_not_withdrawn_again(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule
) -> None:
    state = run(
        reply_rule,
        assistance_accepted(YELLOW - SECOND),
        state=replace(open_reply, fired=frozenset({"yellow"}), withdrawn=frozenset({"yellow"})),
    )
    assert due(state, reply_rule, ladder_plan, RED, GRACE, REESCALATE) == []


def test_a_clock_closed_before_yellow_with_nothing_fired_needs_nothing(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule
) -> None:
    state = run(reply_rule, assistance_accepted(YELLOW - timedelta(hours=3)), state=open_reply)
    assert due(state, reply_rule, ladder_plan, ESCALATED + timedelta(days=5), GRACE, REESCALATE) == []


def test_an_acknowledged_escalation_is_re_escalated_when_the_loop_stays_open(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule
) -> None:
    acked_at = ESCALATED + timedelta(hours=2)
    state = replace(open_reply, fired=frozenset(LEVELS_ALL), acknowledged_at=acked_at)
    assert due(state, reply_rule, ladder_plan, acked_at + REESCALATE - SECOND, GRACE, REESCALATE) == []
    assert due(state, reply_rule, ladder_plan, acked_at + REESCALATE, GRACE, REESCALATE) == [
        Action("raise", "re_escalated", acked_at + REESCALATE)
    ]
    again = replace(state, fired=state.fired | {"re_escalated"})
    assert due(again, reply_rule, ladder_plan, acked_at + 3 * REESCALATE, GRACE, REESCALATE) == []


def test_an_acknowledged_clock_that_closed_is_not_re_escalated(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule
) -> None:
    acked_at = ESCALATED + timedelta(hours=2)
    state = replace(open_reply, fired=frozenset(LEVELS_ALL), acknowledged_at=acked_at)
    closed = run(reply_rule, assistance_accepted(acked_at + timedelta(hours=1)), state=state)
    assert due(closed, reply_rule, ladder_plan, acked_at + 2 * REESCALATE, GRACE, REESCALATE) == []


def test_a_window_is_tracked_but_never_alerts(rules: ClockRules, calendar: WorkingDayCalendar) -> None:
    window = rules.rules["case.reconsideration_window"]
    served = envelope("case.decision_served.v1", "SL-2025-0616", time_=cn(2025, 6, 16, 10))
    state = run(window, served)
    plan = plan_of(state, window, rules, calendar)
    # 14 days to 30 June, 31 to 31 July (45), 15 to Friday 15 August (60).
    assert plan.deadline == eod(2025, 8, 15)
    assert window.alerts is False
    for now in (
        plan.thresholds["yellow"] + GRACE,
        plan.deadline + GRACE,
        plan.thresholds["escalated"] + GRACE,
    ):
        assert due(state, window, plan, now + timedelta(days=365), GRACE, REESCALATE) == []
    assert next_check(state, window, plan, GRACE, REESCALATE) is None


def _transfer_request(discovered_on: date) -> Envelope:
    return envelope(
        "transfer.requested.v1",
        "TR-2025-0613",
        time_=cn(2025, 6, 13, 10),  # Friday 13 June 2025
        urgent=False,
        discovered_on=discovered_on,
    )


def test_a_transfer_sent_ten_days_after_discovery_raises_red_once(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    send = rules.rules["transfer.send"]
    request = _transfer_request(date(2025, 6, 3))
    state = run(send, request)
    plan = plan_of(state, send, rules, calendar)
    # Wednesday 4 (1), Thursday 5 (2), Friday 6 June (3): sent a week late.
    assert plan.deadline == eod(2025, 6, 6)
    assert plan.violated is True
    assert due(state, send, plan, request.time, GRACE, REESCALATE) == [Action("raise", "red", request.time)]
    assert next_check(state, send, plan, GRACE, REESCALATE) == request.time
    fired = replace(state, fired=frozenset({"red"}))
    assert due(fired, send, plan, request.time + timedelta(days=30), GRACE, REESCALATE) == []
    assert next_check(fired, send, plan, GRACE, REESCALATE) is None


def test_a_transfer_sent_within_three_working_days_of_discovery_raises_nothing(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    send = rules.rules["transfer.send"]
    # Wednesday 11 June: Thursday 12 (1), Friday 13 (2), Monday 16 (3); sent on Friday 13.
    state = run(send, _transfer_request(date(2025, 6, 11)))
    plan = plan_of(state, send, rules, calendar)
    assert plan.deadline == eod(2025, 6, 16)
    assert plan.violated is False
    assert due(state, send, plan, cn(2025, 7, 1), GRACE, REESCALATE) == []
    assert next_check(state, send, plan, GRACE, REESCALATE) is None


@pytest.mark.parametrize(
    ("hearing_date", "too_short"),
    [
        (date(2025, 6, 12), True),  # 3 working days after Monday 9 June
        (date(2025, 6, 17), True),  # 6 working days
        (date(2025, 6, 18), False),  # exactly 7 working days: 10, 11, 12, 13, 16, 17, 18
        (date(2025, 6, 23), False),  # 10 working days
    ],
)
def test_a_hearing_notified_less_than_seven_working_days_ahead_raises_red(
    rules: ClockRules, calendar: WorkingDayCalendar, hearing_date: date, too_short: bool
) -> None:
    notice = rules.rules["case.hearing_notice"]
    scheduled = envelope(
        "case.hearing_scheduled.v1", "SL-2025-0609", time_=cn(2025, 6, 9, 10), hearing_date=hearing_date
    )
    state = run(notice, scheduled)
    plan = plan_of(state, notice, rules, calendar)
    assert plan.deadline == eod(2025, 6, 18)
    assert plan.violated is too_short
    expected = [Action("raise", "red", scheduled.time)] if too_short else []
    assert due(state, notice, plan, scheduled.time + timedelta(minutes=1), GRACE, REESCALATE) == expected


# ------------------------------------------------------------------------------ 6. applying events


def test_a_stop_that_arrives_before_its_start_gives_the_same_clock(
    reply_rule: ClockRule, rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    start = assistance_requested(cn(2025, 6, 13, 10))
    stop = assistance_accepted(cn(2025, 6, 16, 9))
    in_order = run(reply_rule, start, stop)
    reversed_ = run(reply_rule, stop, start, state=fresh(reply_rule, start.subject))
    assert in_order == reversed_
    assert in_order.started_at == start.time
    assert in_order.stopped_at == stop.time
    assert not in_order.open
    assert schedule(in_order, reply_rule, rules, calendar) == schedule(reversed_, reply_rule, rules, calendar)


def test_the_earliest_of_two_starts_wins_with_its_own_reply_by_date(reply_rule: ClockRule) -> None:
    first = assistance_requested(cn(2025, 6, 13, 10), reply_by=date(2025, 6, 18))
    retry = assistance_requested(cn(2025, 6, 13, 11), reply_by=date(2025, 6, 30))
    for order in ((first, retry), (retry, first)):
        state = run(reply_rule, *order, state=fresh(reply_rule, first.subject))
        assert (state.started_at, state.start_deadline) == (first.time, date(2025, 6, 18))


def test_a_repeated_stop_keeps_the_latest_stop_time(reply_rule: ClockRule) -> None:
    start = assistance_requested(cn(2025, 6, 13, 10))
    early, late = assistance_accepted(cn(2025, 6, 16, 9)), assistance_accepted(cn(2025, 6, 16, 15))
    for order in ((start, early, late), (late, start, early), (early, late, start)):
        assert run(reply_rule, *order, state=fresh(reply_rule, start.subject)).stopped_at == late.time


SUPERVISION = "DB-2025-0007"


def _order_events() -> list[Envelope]:
    return [
        envelope(
            "supervision.order_issued.v1",
            SUPERVISION,
            source="district.justice-bureau",
            time_=cn(2025, 6, 9, 10),
            to_unit=POLICE,
            reply_by=date(2025, 6, 13),
        ),
        envelope("supervision.order_replied.v1", SUPERVISION, source=POLICE, time_=cn(2025, 6, 12, 10)),
        envelope(
            "supervision.order_reopened.v1",
            SUPERVISION,
            source="district.justice-bureau",
            time_=cn(2025, 6, 16, 10),
            reply_by=date(2025, 6, 20),
        ),
    ]


def test_a_reopened_supervision_order_runs_a_new_cycle_with_its_own_deadline(
    rules: ClockRules, calendar: WorkingDayCalendar
) -> None:
    order = rules.rules["supervision.reply"]
    issued, replied, reopened = _order_events()
    replied_state = run(order, issued, replied)
    assert not replied_state.open
    assert plan_of(replied_state, order, rules, calendar).deadline == eod(2025, 6, 13)

    # The first cycle had warned before the reply came in.
    warned = replace(replied_state, fired=frozenset({"yellow"}))
    reopened_state = run(order, reopened, state=warned)
    assert reopened_state.open
    assert reopened_state.effective_start == reopened.time
    assert reopened_state.fired == frozenset()
    assert plan_of(reopened_state, order, rules, calendar).deadline == eod(2025, 6, 20)


def test_each_cycle_of_a_reopened_clock_gets_alert_ids_of_its_own(rules: ClockRules) -> None:
    order = rules.rules["supervision.reply"]
    issued, replied, reopened = _order_events()
    first_cycle = run(order, issued, replied)
    second_cycle = run(order, reopened, state=first_cycle)
    assert first_cycle.clock_id == second_cycle.clock_id
    assert first_cycle.effective_start is not None
    assert second_cycle.effective_start is not None
    first_id = alert_id(first_cycle.clock_id, "yellow", first_cycle.effective_start.isoformat())
    second_id = alert_id(second_cycle.clock_id, "yellow", second_cycle.effective_start.isoformat())
    assert first_id != second_id
    # Deterministic across retries, and distinct per level.
    assert first_id == alert_id(first_cycle.clock_id, "yellow", first_cycle.effective_start.isoformat())
    assert first_id != alert_id(first_cycle.clock_id, "red", first_cycle.effective_start.isoformat())


def test_a_redelivered_reopening_does_not_clear_the_new_cycles_alerts(rules: ClockRules) -> None:
    order = rules.rules["supervision.reply"]
    issued, replied, reopened = _order_events()
    second_cycle = replace(run(order, issued, replied, reopened), fired=frozenset({"yellow"}))
    assert run(order, reopened, state=second_cycle) == second_cycle


def test_a_supervision_order_ends_in_the_same_state_whatever_order_its_events_arrive_in(
    rules: ClockRules,
) -> None:
    order = rules.rules["supervision.reply"]
    issued, replied, reopened = _order_events()
    replied_again = envelope(
        "supervision.order_replied.v1", SUPERVISION, source=POLICE, time_=cn(2025, 6, 19, 10)
    )
    for events in ([issued, replied, reopened], [issued, replied, reopened, replied_again]):
        finals = {
            run(order, *perm, state=fresh(order, SUPERVISION)) for perm in itertools.permutations(events)
        }
        assert len(finals) == 1, finals
    assert run(order, issued, replied, reopened).open
    assert not run(order, issued, replied, reopened, replied_again).open


# ------------------------------------------------------------------------------ 7. next check


def test_an_open_clock_is_next_checked_at_its_earliest_unfired_rung_plus_grace(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule
) -> None:
    def check(fired: set[str]) -> datetime | None:
        state = replace(open_reply, fired=frozenset(fired))
        return next_check(state, reply_rule, ladder_plan, GRACE, REESCALATE)

    assert check(set()) == YELLOW + GRACE
    assert check({"yellow"}) == RED + GRACE
    assert check({"red"}) == ESCALATED + GRACE  # yellow was skipped during an outage: it never comes
    assert check({"yellow", "red"}) == ESCALATED + GRACE
    assert check(set(LEVELS_ALL)) is None


def test_an_acknowledged_open_clock_is_next_checked_when_re_escalation_is_due(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule
) -> None:
    acked_at = ESCALATED + timedelta(hours=2)
    state = replace(open_reply, fired=frozenset(LEVELS_ALL), acknowledged_at=acked_at)
    assert next_check(state, reply_rule, ladder_plan, GRACE, REESCALATE) == acked_at + REESCALATE
    done = replace(state, fired=state.fired | {"re_escalated"})
    assert next_check(done, reply_rule, ladder_plan, GRACE, REESCALATE) is None


@pytest.mark.parametrize(
    "fired", [set(), {"yellow"}, {"red"}, {"yellow", "red"}], ids=["none", "yellow", "red", "yellow+red"]
)
def test_due_returns_nothing_just_before_next_check_and_something_at_it(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule, fired: set[str]
) -> None:
    state = replace(open_reply, fired=frozenset(fired))
    at = next_check(state, reply_rule, ladder_plan, GRACE, REESCALATE)
    assert at is not None
    assert due(state, reply_rule, ladder_plan, at - SECOND, GRACE, REESCALATE) == []
    assert due(state, reply_rule, ladder_plan, at, GRACE, REESCALATE) != []


def test_a_stopped_clock_with_nothing_to_withdraw_is_never_checked_again(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule
) -> None:
    quiet = run(reply_rule, assistance_accepted(YELLOW - timedelta(hours=1)), state=open_reply)
    assert next_check(quiet, reply_rule, ladder_plan, GRACE, REESCALATE) is None
    warned_rightly = replace(open_reply, fired=frozenset({"yellow"}))
    late_close = run(reply_rule, assistance_accepted(YELLOW + timedelta(hours=1)), state=warned_rightly)
    assert next_check(late_close, reply_rule, ladder_plan, GRACE, REESCALATE) is None


def test_a_stopped_clock_with_a_pending_withdrawal_is_checked_at_its_stop_time(
    open_reply: ClockState, reply_rule: ClockRule, ladder_plan: Schedule
) -> None:
    stop_at = YELLOW - timedelta(minutes=2)
    warned = replace(open_reply, fired=frozenset({"yellow"}))
    stopped = run(reply_rule, assistance_accepted(stop_at), state=warned)
    assert next_check(stopped, reply_rule, ladder_plan, GRACE, REESCALATE) == stop_at
    withdrawn = replace(stopped, withdrawn=frozenset({"yellow"}))
    assert next_check(withdrawn, reply_rule, ladder_plan, GRACE, REESCALATE) is None


# ------------------------------------------------------------------------------ 8. per-party clocks


def test_a_consultation_opens_one_opinion_clock_per_consulted_unit_and_one_reply_stops_only_its_own(
    rules: ClockRules,
) -> None:
    subject = "HS-2025-0001"
    requested = envelope(
        "consultation.requested.v1",
        subject,
        source=OFFICE,
        time_=cn(2025, 6, 9, 10),
        consulted_units=[POLICE, MARKET],
        convening_unit=OFFICE,
    )
    opinion = rules.rules["consultation.opinion"]
    assert parties(opinion, requested) == [POLICE, MARKET]
    assert parties(rules.rules["consultation.acceptance"], requested) == [""]

    opened = touched(rules, [requested])
    assert sorted((rule.id, role, party) for rule, role, _, party in opened) == [
        ("consultation.acceptance", "start", ""),
        ("consultation.opinion", "start", MARKET),
        ("consultation.opinion", "start", POLICE),
    ]

    # Recorded by the convening office; the `unit` field says whose opinion it is.
    received = envelope(
        "consultation.opinion_received.v1", subject, source=OFFICE, time_=cn(2025, 6, 11, 10), unit=MARKET
    )
    assert [(rule.id, role, party) for rule, role, _, party in touched(rules, [received])] == [
        ("consultation.opinion", "stop", MARKET)
    ]

    states: dict[str, ClockState] = {}
    for rule, role, event, party in touched(rules, [received, requested]):  # arrival order reversed
        key = clock_id(rule.id, event.area, event.subject, party)
        state = states.get(key) or ClockState(key, rule.id, event.area, event.subject, party)
        states[key] = apply(state, rule, role, event)

    police_clock = states[clock_id("consultation.opinion", "consultation", subject, POLICE)]
    market_clock = states[clock_id("consultation.opinion", "consultation", subject, MARKET)]
    acceptance = states[clock_id("consultation.acceptance", "consultation", subject, "")]
    assert len(states) == 3
    assert police_clock.open
    assert not market_clock.open
    assert acceptance.open
    assert police_clock.clock_id != market_clock.clock_id


def test_clock_ids_differ_by_rule_area_subject_and_party() -> None:
    base = clock_id("consultation.opinion", "consultation", "HS-1", POLICE)
    assert base == clock_id("consultation.opinion", "consultation", "HS-1", POLICE)
    variants = {
        clock_id("consultation.acceptance", "consultation", "HS-1", POLICE),
        clock_id("consultation.opinion", "case", "HS-1", POLICE),
        clock_id("consultation.opinion", "consultation", "HS-2", POLICE),
        clock_id("consultation.opinion", "consultation", "HS-1", MARKET),
    }
    assert base not in variants
    assert len(variants) == 4
