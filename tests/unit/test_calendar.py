"""The working-day calendar: official holidays and make-up weekends, provisional years, extra data.

Expected dates are worked out by hand from the State Council schedules, not by the code under test.
Tests about years without official data pin the package's coverage to 2026 (`OFFICIAL_TO_2026`), so
they keep testing the mechanism after a chinese-calendar release learns 2027.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import chinese_calendar  # type: ignore[import-untyped]
import pytest

from events.calendar import (
    EXTRA_YEARS_PATH,
    DayVerdict,
    Deadline,
    WorkingDayCalendar,
    WorkingDayCount,
    package_schedule,
)

D = dt.date
EMPTY: dict[str, Any] = {"version": 1, "note": "", "years": {}}
OFFICIAL_TO_2026 = package_schedule().through(2026)
# Invented for the tests: 2027's schedule is not official as of this writing.
INVENTED_2027: dict[str, Any] = {
    "version": 1,
    "years": {
        "2027": {
            "holidays": ["2027-01-01"],
            "workdays": ["2027-01-16"],
            "source": "invented test data, not a State Council notice",
        }
    },
}


@pytest.fixture(scope="module")
def calendar() -> WorkingDayCalendar:
    return WorkingDayCalendar.from_mapping(EMPTY)


@pytest.fixture(scope="module")
def calendar_to_2026() -> WorkingDayCalendar:
    return WorkingDayCalendar.from_mapping(EMPTY, package=OFFICIAL_TO_2026)


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "extra_years.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


# 2025 National Day + Mid-Autumn: 1-8 October off; Sunday 28 September and Saturday 11 October worked.


@pytest.mark.parametrize("day", [D(2025, 10, 1) + dt.timedelta(days=i) for i in range(8)], ids=str)
def test_every_day_from_1_to_8_october_2025_is_an_official_day_off(
    calendar: WorkingDayCalendar, day: dt.date
) -> None:
    verdict = calendar.is_working_day(day)
    assert (verdict.working, verdict.official) == (False, True)


@pytest.mark.parametrize("day", [D(2025, 9, 28), D(2025, 10, 11)], ids=str)
def test_the_make_up_weekend_days_around_national_day_2025_are_working_days(
    calendar: WorkingDayCalendar, day: dt.date
) -> None:
    assert day.weekday() >= 5
    verdict = calendar.is_working_day(day)
    assert (verdict.working, verdict.official) == (True, True)


def test_the_ordinary_weekend_days_around_national_day_2025_stay_days_off(
    calendar: WorkingDayCalendar,
) -> None:
    assert not calendar.is_working_day(D(2025, 9, 27)).working
    assert not calendar.is_working_day(D(2025, 10, 12)).working


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        # Sat 27 off, Sun 28 worked (1), Mon 29 (2), Tue 30 (3).
        (D(2025, 9, 26), 3, D(2025, 9, 30)),
        # ... then 1-8 October off, Thu 9 October (4).
        (D(2025, 9, 26), 4, D(2025, 10, 9)),
        # Thu 9 (1), Fri 10 (2), Sat 11 worked (3).
        (D(2025, 9, 30), 3, D(2025, 10, 11)),
        # ... Sun 12 off, Mon 13 (4), Tue 14 (5).
        (D(2025, 9, 30), 5, D(2025, 10, 14)),
        # A start inside the holiday counts from the next day like any other: 9, 10, 11.
        (D(2025, 10, 3), 3, D(2025, 10, 11)),
    ],
)
def test_working_days_across_national_day_2025_skip_the_holiday_and_count_the_make_up_days(
    calendar: WorkingDayCalendar, start: dt.date, n: int, expected: dt.date
) -> None:
    assert calendar.add_working_days(start, n) == Deadline(expected, provisional=False)


def test_zero_working_days_end_on_the_start_day(calendar: WorkingDayCalendar) -> None:
    assert calendar.add_working_days(D(2025, 10, 1), 0) == Deadline(D(2025, 10, 1), provisional=False)


def test_working_days_between_counts_after_the_first_date_up_to_and_including_the_second(
    calendar: WorkingDayCalendar,
) -> None:
    # 28, 29, 30 September; 9, 10, 11, 13, 14 October.
    assert calendar.working_days_between(D(2025, 9, 26), D(2025, 10, 14)) == WorkingDayCount(8, False)
    assert calendar.working_days_between(D(2025, 10, 1), D(2025, 10, 8)) == WorkingDayCount(0, False)
    assert calendar.working_days_between(D(2025, 10, 14), D(2025, 10, 14)) == WorkingDayCount(0, False)


def test_working_days_between_refuses_an_end_before_the_start(calendar: WorkingDayCalendar) -> None:
    with pytest.raises(ValueError, match=r"b \(2025-10-01\) is before a \(2025-10-02\)"):
        calendar.working_days_between(D(2025, 10, 2), D(2025, 10, 1))


def test_a_negative_number_of_days_is_refused(calendar: WorkingDayCalendar) -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        calendar.add_working_days(D(2025, 10, 1), -1)
    with pytest.raises(ValueError, match="n must be >= 0"):
        calendar.add_calendar_days(D(2025, 10, 1), -1)


def test_a_datetime_is_refused_because_its_local_date_depends_on_the_zone(
    calendar: WorkingDayCalendar,
) -> None:
    with pytest.raises(TypeError, match="Asia/Shanghai"):
        calendar.add_working_days(dt.datetime(2025, 9, 30, 20, tzinfo=dt.UTC), 1)


# 2026 Spring Festival, per the State Council notice on the 2026 holiday arrangements (国务院办公厅关于
# 2026年部分节假日安排的通知) as encoded in chinese-calendar 1.11: Sunday 15 to Monday 23 February off;
# Saturday 14 February and Saturday 28 February worked.


def test_spring_festival_2026_runs_from_sunday_15_to_monday_23_february_with_two_make_up_saturdays(
    calendar: WorkingDayCalendar,
) -> None:
    days = [D(2026, 2, 13) + dt.timedelta(days=i) for i in range(17)]  # 13 Feb to 1 Mar
    working = [d for d in days if calendar.is_working_day(d).working]
    assert working == [
        D(2026, 2, 13),
        D(2026, 2, 14),
        D(2026, 2, 24),
        D(2026, 2, 25),
        D(2026, 2, 26),
        D(2026, 2, 27),
        D(2026, 2, 28),
    ]
    assert all(calendar.is_working_day(d).official for d in days)


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (D(2026, 2, 13), 1, D(2026, 2, 14)),  # the make-up Saturday
        (D(2026, 2, 13), 2, D(2026, 2, 24)),  # 15-23 February off
        (D(2026, 2, 13), 6, D(2026, 2, 28)),  # 14, 24, 25, 26, 27, 28
        (D(2026, 2, 13), 7, D(2026, 3, 2)),  # Sunday 1 March off
        # A 15-working-day filing decision: 11, 12, 13, 14 Feb; 24-28 Feb; 2-6 Mar; 9 Mar.
        (D(2026, 2, 10), 15, D(2026, 3, 9)),
    ],
)
def test_working_days_across_spring_festival_2026(
    calendar: WorkingDayCalendar, start: dt.date, n: int, expected: dt.date
) -> None:
    assert calendar.add_working_days(start, n) == Deadline(expected, provisional=False)


# Years without official data.


def test_a_clock_from_late_december_2026_into_2027_is_provisional_and_counts_weekends_only(
    calendar_to_2026: WorkingDayCalendar,
) -> None:
    # 25, 28, 29, 30, 31 Dec; Fri 1 Jan counted as a weekday; 4-8, 11-14 Jan.
    assert calendar_to_2026.add_working_days(D(2026, 12, 24), 15) == Deadline(D(2027, 1, 14), True)
    verdict = calendar_to_2026.is_working_day(D(2027, 1, 1))
    assert (verdict.working, verdict.official) == (True, False)
    assert not calendar_to_2026.is_working_day(D(2027, 1, 2)).working


def test_extra_data_for_2027_makes_the_same_clock_official_and_moves_its_date(
    calendar_to_2026: WorkingDayCalendar, tmp_path: Path
) -> None:
    extended = WorkingDayCalendar.load(write(tmp_path, INVENTED_2027), package=OFFICIAL_TO_2026)
    # 1 January now off: 25, 28, 29, 30, 31 Dec; 4-8, 11-15 Jan.
    assert extended.add_working_days(D(2026, 12, 24), 15) == Deadline(D(2027, 1, 15), False)
    assert extended.is_working_day(D(2027, 1, 1)) == DayVerdict(D(2027, 1, 1), working=False, official=True)
    saturday = extended.is_working_day(D(2027, 1, 16))
    assert (saturday.working, saturday.official) == (True, True)
    assert extended.version != calendar_to_2026.version
    assert extended.covered_years()[-1] == 2027
    assert (
        extended.source_of(2027)
        == f"{tmp_path / 'extra_years.json'}: {INVENTED_2027['years']['2027']['source']}"
    )


def test_the_version_changes_with_the_extra_data_and_only_with_what_changes_an_answer(
    tmp_path: Path,
) -> None:
    def version(doc: dict[str, Any]) -> str:
        return WorkingDayCalendar.from_mapping(doc, package=OFFICIAL_TO_2026).version

    reworded = {**INVENTED_2027, "note": "a different note"}
    moved = json.loads(json.dumps(INVENTED_2027))
    moved["years"]["2027"]["workdays"] = ["2027-01-17"]
    assert version(reworded) == version(INVENTED_2027)
    assert len({version(EMPTY), version(INVENTED_2027), version(moved)}) == 3
    # The package's data counts too: a release that adds a year gives a new version.
    assert WorkingDayCalendar.from_mapping(EMPTY, package=OFFICIAL_TO_2026.through(2025)).version != version(
        EMPTY
    )


def test_the_last_days_of_december_are_provisional_until_the_next_years_notice_is_known(
    calendar_to_2026: WorkingDayCalendar,
) -> None:
    # The 2019 notice moved days of 2018: Saturday 29 December worked, Monday 31 December off.
    assert calendar_to_2026.is_working_day(D(2018, 12, 29)).working
    assert not calendar_to_2026.is_working_day(D(2018, 12, 31)).working
    assert calendar_to_2026.is_working_day(D(2026, 12, 24)).official
    assert not calendar_to_2026.is_working_day(D(2026, 12, 25)).official
    assert calendar_to_2026.add_working_days(D(2026, 12, 28), 1) == Deadline(D(2026, 12, 29), True)
    assert calendar_to_2026.official_through() == D(2026, 12, 24)
    extended = WorkingDayCalendar.from_mapping(INVENTED_2027, package=OFFICIAL_TO_2026)
    assert extended.add_working_days(D(2026, 12, 28), 1) == Deadline(D(2026, 12, 29), False)
    assert extended.official_through() == D(2027, 12, 24)


def test_a_years_extra_data_may_move_the_end_of_december_before_it_overriding_the_package() -> None:
    doc = {
        "version": 1,
        "years": {"2027": {"holidays": ["2026-12-31", "2027-01-01"], "workdays": ["2026-12-26"]}},
    }
    extended = WorkingDayCalendar.from_mapping(doc, package=OFFICIAL_TO_2026)
    assert extended.is_working_day(D(2026, 12, 26)).working
    assert not extended.is_working_day(D(2026, 12, 31)).working
    # Fri 25, Sat 26 (worked), 28, 29, 30; then 31 Dec and 1 Jan off, a weekend; Mon 4 Jan.
    assert extended.add_working_days(D(2026, 12, 24), 6) == Deadline(D(2027, 1, 4), False)


def test_extra_data_overrides_the_package_for_the_dates_it_lists_and_for_no_others() -> None:
    # A correction: the make-up Saturday 10 October 2026 declared a day off; the rest of 2026 stays.
    doc = {"version": 1, "years": {"2026": {"holidays": ["2026-10-10"], "workdays": [], "source": "test"}}}
    corrected = WorkingDayCalendar.from_mapping(doc, package=OFFICIAL_TO_2026)
    assert WorkingDayCalendar.from_mapping(EMPTY).is_working_day(D(2026, 10, 10)).working
    assert not corrected.is_working_day(D(2026, 10, 10)).working
    assert corrected.is_working_day(D(2026, 9, 20)).working  # the package's other make-up Sunday
    assert not corrected.is_working_day(D(2026, 10, 7)).working
    assert corrected.source_of(2026) == f"chinese-calendar {chinese_calendar.__version__} + extra years: test"


def test_coverage_reports_the_package_years_and_the_extra_years() -> None:
    doc = {"version": 1, "years": {"2029": {"holidays": [], "workdays": []}}}
    extended = WorkingDayCalendar.from_mapping(doc, package=OFFICIAL_TO_2026)
    assert extended.covered_years() == (*range(2004, 2027), 2029)
    assert extended.official_through() == D(2026, 12, 24)  # 2027 is a gap
    assert extended.source_of(2004) == f"chinese-calendar {chinese_calendar.__version__}"
    assert extended.source_of(2027) is None


def test_the_installed_package_covers_2004_to_at_least_2026_and_refuses_other_years() -> None:
    schedule = package_schedule()
    assert min(schedule.years) == 2004
    assert max(schedule.years) >= 2026
    assert schedule.years == frozenset(range(2004, max(schedule.years) + 1))
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(D(max(schedule.years) + 1, 1, 1))


def test_the_calendar_agrees_with_chinese_calendar_on_every_day_the_package_covers(
    calendar: WorkingDayCalendar,
) -> None:
    years = package_schedule().years
    day, last = D(min(years), 1, 1), D(max(years), 12, 31)
    disagreements = []
    while day <= last:
        if calendar.is_working_day(day).working != chinese_calendar.is_workday(day):
            disagreements.append(day)
        day += dt.timedelta(days=1)
    assert disagreements == []


# Calendar-day periods (Administrative Penalty Law Art. 85; Civil Code Art. 203).


def test_ninety_calendar_days_after_a_filing_end_on_the_ninetieth_day() -> None:
    calendar = WorkingDayCalendar.from_mapping(EMPTY)
    # 12 March 2025 + 19 (31 Mar) + 30 (30 Apr) + 31 (31 May) + 10 = Tuesday 10 June.
    assert calendar.add_calendar_days(D(2025, 3, 12), 90) == Deadline(D(2025, 6, 10), False)


def test_a_period_ending_on_an_ordinary_sunday_extends_to_the_monday(calendar: WorkingDayCalendar) -> None:
    # 10 March 2025 + 90 days = Sunday 8 June.
    assert calendar.add_calendar_days(D(2025, 3, 10), 90) == Deadline(D(2025, 6, 9), False)


def test_a_fifteen_day_period_ending_on_national_day_extends_to_the_first_working_day_after_it(
    calendar: WorkingDayCalendar,
) -> None:
    # 16 September 2025 + 15 days = Wednesday 1 October; 1-8 October are off.
    assert calendar.add_calendar_days(D(2025, 9, 16), 15) == Deadline(D(2025, 10, 9), False)
    assert calendar.add_calendar_days(D(2025, 9, 16), 15, extend_past_holidays=False) == Deadline(
        D(2025, 10, 1), False
    )


def test_a_period_ending_on_a_make_up_working_saturday_does_not_extend(calendar: WorkingDayCalendar) -> None:
    # 26 September 2025 + 15 days = Saturday 11 October, a working day.
    assert calendar.add_calendar_days(D(2025, 9, 26), 15) == Deadline(D(2025, 10, 11), False)


def test_a_calendar_day_period_is_provisional_only_when_its_extension_check_reaches_an_unofficial_year(
    calendar_to_2026: WorkingDayCalendar,
) -> None:
    # 20 December 2026 + 15 days = Monday 4 January 2027.
    assert calendar_to_2026.add_calendar_days(D(2026, 12, 20), 15) == Deadline(D(2027, 1, 4), True)
    assert calendar_to_2026.add_calendar_days(D(2026, 12, 20), 15, extend_past_holidays=False) == Deadline(
        D(2027, 1, 4), False
    )


# The extra-years file.


def test_the_shipped_extra_years_file_loads_and_documents_its_format() -> None:
    assert EXTRA_YEARS_PATH.parent.name == "calendar_data"
    calendar = WorkingDayCalendar.load()
    doc = json.loads(EXTRA_YEARS_PATH.read_text(encoding="utf-8"))
    for word in ('"holidays"', '"workdays"', '"source"', "调休"):
        assert word in doc["note"]
    assert set(calendar.covered_years()) >= package_schedule().years | {int(y) for y in doc["years"]}


def test_an_extra_years_file_that_is_not_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        WorkingDayCalendar.load(path)


def year_2027(**entry: object) -> dict[str, Any]:
    return {"version": 1, "years": {"2027": {"holidays": [], "workdays": [], **entry}}}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (year_2027(holidays=["2027-02-30"]), r"years\.2027\.holidays\[0\]: '2027-02-30' is not a valid date"),
        (
            year_2027(holidays=["2027/01/01"]),
            r"years\.2027\.holidays\[0\]: '2027/01/01' is not a date written",
        ),
        (year_2027(holidays=["20270101"]), r"'20270101' is not a date written YYYY-MM-DD"),
        (year_2027(holiday=["2027-01-01"]), r"unknown key 'holiday' at years\.2027"),
        ({**EMPTY, "comment": "x"}, r"unknown key 'comment' at top level"),
        (
            year_2027(holidays=["2027-01-09"], workdays=["2027-01-09"]),
            r"2027-01-09 is listed both as a holiday and as a workday",
        ),
        (year_2027(holidays=["2027-01-01", "2027-01-01"]), r"2027-01-01 is listed twice"),
        (year_2027(workdays=["2027-01-04"]), r"2027-01-04 is a Monday; 'workdays' lists only Saturdays"),
        (year_2027(holidays=["2026-12-20"]), r"2026-12-20 is outside 2027"),
        ({"version": 1, "years": {"2027": {"holidays": []}}}, r"years\.2027\.workdays: required"),
        ({"version": 1, "years": {"27": {"holidays": [], "workdays": []}}}, r"four digits"),
        ({"version": 2, "years": {}}, r"'version' must be 1, got 2"),
        ({"version": True, "years": {}}, r"'version' must be 1, got True"),
        ({"version": 1}, r"'years' must be an object"),
        (year_2027(source=7), r"years\.2027\.source: must be a string"),
    ],
)
def test_a_malformed_extra_years_file_is_refused_with_the_problem_named(
    tmp_path: Path, doc: dict[str, Any], message: str
) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(ValueError, match=message) as caught:
        WorkingDayCalendar.load(path, package=OFFICIAL_TO_2026)
    assert str(path) in str(caught.value)
