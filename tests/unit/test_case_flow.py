"""The case-flow rule (pure): China-time weeks, the judged weeks, spike and silence thresholds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from events.calendar import WorkingDayCalendar
from projections.case_flow import (
    BASELINE_WEEKS,
    SILENCE_MIN_MEAN,
    SPIKE_MIN_CASES,
    FlowFinding,
    classify,
    expected,
    find,
    judged_weeks,
    week_index,
    week_start,
    working_days_of,
)

CST = timezone(timedelta(hours=8))
MONDAY = datetime(2022, 1, 3, tzinfo=CST)
CALENDAR = WorkingDayCalendar.load()


def five_days(_week: int) -> int:
    return 5


def official(week: int) -> int:
    return working_days_of(CALENDAR, week)


def test_weeks_run_from_monday_to_sunday_in_china_time() -> None:
    week = week_index(MONDAY)
    assert week_start(week) == MONDAY
    # 23:59 on Sunday in Beijing is 15:59 UTC: still the same week.
    assert week_index(datetime(2022, 1, 9, 15, 59, tzinfo=UTC)) == week
    # Midnight on Monday in Beijing is 16:00 UTC on Sunday: the next week.
    assert week_index(datetime(2022, 1, 9, 16, 0, tzinfo=UTC)) == week + 1
    assert week_index(MONDAY - timedelta(microseconds=1)) == week - 1


def test_only_complete_observed_weeks_with_a_full_baseline_are_judged() -> None:
    start = week_index(MONDAY)
    far_future = datetime(2030, 1, 1, tzinfo=UTC)
    # Data from Monday: that week is observed whole; data from Tuesday: it starts the week after.
    assert judged_weeks(MONDAY + timedelta(hours=9), MONDAY + timedelta(weeks=10), far_future) == range(
        start + BASELINE_WEEKS, start + 10
    )
    assert judged_weeks(MONDAY + timedelta(days=1), MONDAY + timedelta(weeks=10), far_future) == range(
        start + 1 + BASELINE_WEEKS, start + 10
    )
    # `now` caps the newest filing: a week ends only once now has passed its Sunday.
    assert judged_weeks(MONDAY, MONDAY + timedelta(weeks=10), MONDAY + timedelta(weeks=9, hours=1)) == range(
        start + BASELINE_WEEKS, start + 9
    )
    assert not judged_weeks(MONDAY, MONDAY + timedelta(weeks=8, days=6), far_future)


@pytest.mark.parametrize(
    ("count", "expect", "kind"),
    [
        (12, 5.0, "case_flow_spike"),  # above 5 + 3·√5 = 11.7
        (11, 5.0, None),
        (10, 0.0, "case_flow_spike"),  # a quiet township: 3·√1 is exceeded, ten is the floor
        (SPIKE_MIN_CASES - 1, 0.0, None),
        (40, 20.0, "case_flow_spike"),  # twice the mean, and above 20 + 3·√20 = 33.4
        (39, 20.0, None),  # above 33.4 but not twice the mean
        (0, SILENCE_MIN_MEAN, "case_flow_silence"),
        (0, 4.9, None),
        (1, 30.0, None),  # a quiet week, not a silence
        (6, 6.0, None),
    ],
)
def test_spikes_and_silences_follow_the_documented_thresholds(
    count: int, expect: float, kind: str | None
) -> None:
    assert classify(count, expect) == kind


def test_the_expected_count_is_the_baseline_rate_per_working_day_times_the_weeks_working_days() -> None:
    assert expected([5] * 8, [5] * 8, 5) == 5.0
    assert expected([5] * 8, [5] * 8, 2) == 2.0
    # A holiday week in the baseline lowers the days as well as the filings: the rate stands.
    assert expected([5] * 7 + [0], [5] * 7 + [0], 5) == 5.0
    assert expected([0] * 8, [0] * 8, 5) == 0.0


def test_the_official_calendar_gives_each_week_its_working_days() -> None:
    # 2022: New Year's Monday off; the Spring Festival week off; the Saturday and Sunday before it
    # were make-up working days.
    assert official(week_index(MONDAY)) == 4
    assert official(week_index(datetime(2022, 1, 24, tzinfo=CST))) == 7
    assert official(week_index(datetime(2022, 1, 31, tzinfo=CST))) == 0
    assert official(week_index(datetime(2022, 6, 6, tzinfo=CST))) == 5


def test_a_steady_poisson_like_flow_raises_nothing() -> None:
    start = week_index(MONDAY)
    pattern = [4, 7, 5, 6, 3, 8, 6, 5, 7, 4, 6, 9, 5, 6, 2, 7, 6, 5, 8, 6]
    counts = {("shilou", start + i): n for i, n in enumerate(pattern)}
    assert find(counts, ["shilou"], range(start + BASELINE_WEEKS, start + len(pattern)), five_days) == []


def test_a_spring_festival_week_without_filings_is_no_silence_and_no_drag_on_the_next_baselines() -> None:
    # Twelve filings a week of five working days, from November 2021 to March 2022 (Spring
    # Festival: 31 January to 6 February 2022, no working day; make-up days on 29 and 30 January).
    start = week_index(datetime(2021, 11, 1, tzinfo=CST))
    festival = week_index(datetime(2022, 1, 31, tzinfo=CST))
    end = week_index(datetime(2022, 3, 28, tzinfo=CST))
    counts = {("shiqiao", w): round(12 * official(w) / 5) for w in range(start, end)}
    assert counts[("shiqiao", festival)] == 0
    weeks = range(start + BASELINE_WEEKS, end)
    assert find(counts, ["shiqiao"], weeks, official) == []
    # Counted without the calendar, the same flow is a silence.
    assert [f.kind for f in find(counts, ["shiqiao"], weeks, five_days)] == ["case_flow_silence"]


def test_a_township_without_filings_in_a_week_counts_zero_there() -> None:
    start = week_index(MONDAY)
    counts = {("nancun", start + i): 6 for i in range(BASELINE_WEEKS)}
    found = find(counts, ["nancun"], range(start + BASELINE_WEEKS, start + BASELINE_WEEKS + 1), five_days)
    assert found == [FlowFinding("case_flow_silence", "nancun", start + BASELINE_WEEKS, 0, 6.0)]


def test_a_finding_has_the_same_id_on_every_run_and_a_bilingual_detail() -> None:
    week = week_index(MONDAY) + BASELINE_WEEKS
    a = FlowFinding("case_flow_spike", "shilou", week, 25, 5.0)
    b = FlowFinding("case_flow_spike", "shilou", week, 26, 5.5)
    assert a.anomaly_id == b.anomaly_id
    assert a.anomaly_id != FlowFinding("case_flow_silence", "shilou", week, 0, 6.0).anomaly_id
    assert a.anomaly_id != FlowFinding("case_flow_spike", "nancun", week, 25, 5.0).anomaly_id
    assert "一周立案 25 宗" in a.detail
    assert "25 cases filed in the week 2022-02-28 to 2022-03-06, far above the 5.0 expected" in a.detail
