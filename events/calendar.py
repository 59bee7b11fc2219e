"""China's working-day calendar: official holidays, make-up working weekends (调休), provisional years.

Where the schedule comes from, in order of precedence for a given date:

1. the operator's extra-years file (`calendar_data/extra_years.json` by default, or a path the caller
   chooses), for years the State Council has announced but the installed package does not know yet;
2. the PyPI package `chinese-calendar` (import name `chinese_calendar`), which carries the State
   Council schedule from 2004 up to the last year it was released for (2026 in version 1.11) and
   raises `NotImplementedError` for any other year;
3. otherwise Monday to Friday are working days, and the answer is *provisional* (DESIGN.md,
   non-negotiable 6): it is marked, and a calendar with new data gets a new `version`, so that
   provisional deadlines can be recomputed.

A year's notice can move days at the end of the year before it: the 2019 notice made Saturday
2018-12-29 a working day and Monday 2018-12-31 a day off. So the last `NEXT_YEAR_NOTICE_REACH` days of
December count as official only once the next year is covered too.

All dates are local calendar dates (Asia/Shanghai). A `datetime` is refused rather than silently
truncated in whatever zone it carries.

Nothing here runs at import: the package tables are read and the file is parsed when a calendar is built.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import chinese_calendar  # type: ignore[import-untyped]

EXTRA_YEARS_PATH = Path(__file__).parent / "calendar_data" / "extra_years.json"
EXTRA_YEARS_FORMAT_VERSION = 1
# Days at the end of December (25-31) that the next year's notice may still move.
NEXT_YEAR_NOTICE_REACH = 7

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_YEAR = re.compile(r"\d{4}")
_TOP_KEYS = ("version", "note", "years")
_YEAR_KEYS = ("holidays", "workdays", "source")


@dataclass(frozen=True, slots=True)
class DayVerdict:
    """Whether `day` is a working day, and whether that answer rests on official data."""

    day: dt.date
    working: bool
    official: bool


@dataclass(frozen=True, slots=True)
class Deadline:
    """The last day of a period; `provisional` if any day consulted lacked official data."""

    date: dt.date
    provisional: bool


@dataclass(frozen=True, slots=True)
class WorkingDayCount:
    """A number of working days; `provisional` if any day counted lacked official data."""

    days: int
    provisional: bool


@dataclass(frozen=True, slots=True)
class OfficialSchedule:
    """One source of official data: the years it covers and its exceptions to Monday-Friday.

    `days` maps a date to True (a weekend day that is a working day) or False (a weekday that is a
    day off); entries that agree with Monday-Friday are allowed and change nothing.
    """

    label: str
    years: frozenset[int]
    days: Mapping[dt.date, bool] = field(default_factory=dict)
    sources: Mapping[int, str] = field(default_factory=dict)

    def through(self, last_year: int) -> OfficialSchedule:
        """The same data without the years after `last_year` (for tests that pin a coverage)."""
        return OfficialSchedule(
            label=f"{self.label} (through {last_year})",
            years=frozenset(y for y in self.years if y <= last_year),
            days={d: w for d, w in self.days.items() if d.year <= last_year},
            sources={y: s for y, s in self.sources.items() if y <= last_year},
        )


def package_schedule() -> OfficialSchedule:
    """The schedule in the installed `chinese_calendar`, read from its public tables.

    The package supports exactly the years from its first to its last `holidays` entry (that is how
    its own `_validate_date` decides); `workdays` wins over `holidays`, as in its `is_workday`.
    """
    holidays: Mapping[dt.date, str] = chinese_calendar.holidays
    workdays: Mapping[dt.date, str] = chinese_calendar.workdays
    version: str = chinese_calendar.__version__
    first, last = min(holidays).year, max(holidays).year
    label = f"chinese-calendar {version}"
    days = {d: False for d in holidays} | {d: True for d in workdays}
    years = frozenset(range(first, last + 1))
    return OfficialSchedule(label, years, days, {y: label for y in years})


def parse_extra_years(doc: object, origin: str) -> OfficialSchedule:
    """Validate an extra-years document (see `calendar_data/extra_years.json`); errors name the spot."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"{origin}: the document must be a JSON object")
    _reject_unknown_keys(doc, _TOP_KEYS, origin, "top level")
    version = doc.get("version")
    if isinstance(version, bool) or version != EXTRA_YEARS_FORMAT_VERSION:
        raise ValueError(f"{origin}: 'version' must be {EXTRA_YEARS_FORMAT_VERSION}, got {version!r}")
    if not isinstance(doc.get("note", ""), str):
        raise ValueError(f"{origin}: 'note' must be a string")
    raw_years = doc.get("years")
    if not isinstance(raw_years, Mapping):
        raise ValueError(f"{origin}: 'years' must be an object keyed by year, such as \"2027\"")
    days: dict[dt.date, bool] = {}
    listed_under: dict[dt.date, str] = {}
    sources: dict[int, str] = {}
    for key, entry in raw_years.items():
        where = f"{origin}: years.{key}"
        if not isinstance(key, str) or not _YEAR.fullmatch(key):
            raise ValueError(f'{where}: a year key must have four digits, such as "2027"')
        year = int(key)
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: must be an object with 'holidays' and 'workdays'")
        _reject_unknown_keys(entry, _YEAR_KEYS, origin, f"years.{key}")
        source = entry.get("source", "")
        if not isinstance(source, str):
            raise ValueError(f"{where}.source: must be a string citing the notice")
        sources[year] = f"{origin}: {source}" if source else origin
        for list_key, working in (("holidays", False), ("workdays", True)):
            for index, day in enumerate(_dates(entry, list_key, year, where)):
                spot = f"{key}.{list_key}[{index}]"
                if working and day.weekday() < 5:
                    raise ValueError(
                        f"{where}.{list_key}[{index}]: {day} is a {day:%A}; 'workdays' lists only "
                        "Saturdays and Sundays that become working days"
                    )
                if day in listed_under:
                    both = "both as a holiday and as a workday" if days[day] != working else "twice"
                    raise ValueError(
                        f"{origin}: {day} is listed {both} (years.{listed_under[day]}, years.{spot})"
                    )
                days[day] = working
                listed_under[day] = spot
    return OfficialSchedule(origin, frozenset(sources), days, sources)


def _reject_unknown_keys(
    obj: Mapping[object, object], allowed: tuple[str, ...], origin: str, where: str
) -> None:
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise ValueError(f"{origin}: unknown key {unknown[0]!r} at {where} (allowed: {', '.join(allowed)})")


def _dates(entry: Mapping[object, object], list_key: str, year: int, where: str) -> list[dt.date]:
    raw = entry.get(list_key)
    if not isinstance(raw, list):
        raise ValueError(f'{where}.{list_key}: required, a list of "YYYY-MM-DD" strings (may be empty)')
    found: list[dt.date] = []
    for index, text in enumerate(raw):
        spot = f"{where}.{list_key}[{index}]"
        if not isinstance(text, str) or not _ISO_DATE.fullmatch(text):
            raise ValueError(f"{spot}: {text!r} is not a date written YYYY-MM-DD")
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{spot}: {text!r} is not a valid date") from None
        if day.year != year and not (day.year == year - 1 and _in_notice_reach(day)):
            raise ValueError(
                f"{spot}: {day} is outside {year} (a year may also name 25-31 December of the year before)"
            )
        found.append(day)
    return found


def _in_notice_reach(day: dt.date) -> bool:
    """True for the last days of December, which the next year's notice may still move."""
    return day.month == 12 and day.day > 31 - NEXT_YEAR_NOTICE_REACH


def _require_date(value: object, name: str) -> dt.date:
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise TypeError(f"{name} must be a datetime.date (a local Asia/Shanghai date), got {value!r}")
    return value


class WorkingDayCalendar:
    """The official schedule merged from the package and the extra-years data, with a version.

    `version` is a fingerprint of everything that can change an answer (covered years and the
    exceptions to Monday-Friday); it changes when the extra data or the package data changes.
    """

    __slots__ = ("_days", "_sources", "_version", "_years")

    def __init__(self, package: OfficialSchedule, extra: OfficialSchedule) -> None:
        days: dict[dt.date, bool] = {}
        for source in (package, extra):  # later sources override earlier ones, date by date
            for day, working in source.days.items():
                if working == (day.weekday() < 5):
                    days.pop(day, None)
                else:
                    days[day] = working
        self._days: Mapping[dt.date, bool] = days
        self._years = package.years | extra.years
        self._sources: Mapping[int, str] = {
            year: " + ".join(s for s in (package.sources.get(year), extra.sources.get(year)) if s)
            for year in self._years
        }
        digest = hashlib.sha256(f"reach={NEXT_YEAR_NOTICE_REACH};years=".encode())
        digest.update(",".join(str(y) for y in sorted(self._years)).encode())
        for day in sorted(days):
            digest.update(f";{day.isoformat()}={'W' if days[day] else 'H'}".encode())
        self._version = f"wdc-{digest.hexdigest()[:16]}"

    @classmethod
    def load(
        cls, extra_path: Path | None = None, *, package: OfficialSchedule | None = None
    ) -> WorkingDayCalendar:
        """The package schedule plus the extra-years file (default: the shipped one)."""
        path = EXTRA_YEARS_PATH if extra_path is None else extra_path
        text = path.read_text(encoding="utf-8")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from None
        return cls.from_mapping(doc, origin=str(path), package=package)

    @classmethod
    def from_mapping(
        cls,
        doc: Mapping[str, object],
        *,
        origin: str = "extra years",
        package: OfficialSchedule | None = None,
    ) -> WorkingDayCalendar:
        """The package schedule (or `package`) plus an extra-years document already in memory."""
        official = package_schedule() if package is None else package
        return cls(official, parse_extra_years(doc, origin))

    @property
    def version(self) -> str:
        return self._version

    def covered_years(self) -> tuple[int, ...]:
        """Every year with official data, from the package or the extra data, ascending."""
        return tuple(sorted(self._years))

    def official_through(self) -> dt.date | None:
        """The last date up to which every day since the first covered year is official.

        It stops before the December days that the next, uncovered year's notice may still move.
        """
        if not self._years:
            return None
        year = min(self._years)
        while year + 1 in self._years:
            year += 1
        return dt.date(year, 12, 31 - NEXT_YEAR_NOTICE_REACH)

    def source_of(self, year: int) -> str | None:
        """Where the official data for `year` comes from, or None if the year has none."""
        return self._sources.get(year)

    def is_working_day(self, day: dt.date) -> DayVerdict:
        _require_date(day, "day")
        return DayVerdict(day, self._days.get(day, day.weekday() < 5), self._is_official(day))

    def add_working_days(self, start: dt.date, n: int) -> Deadline:
        """The day on which `n` working days after `start` are complete.

        Counting starts the day after `start` (Civil Code Art. 201: the first day is not counted),
        so a non-working `start` changes nothing, and `n == 0` returns `start`.
        """
        _require_date(start, "start")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        day, counted, provisional = start, 0, False
        one = dt.timedelta(days=1)
        while counted < n:
            day += one
            verdict = self.is_working_day(day)
            provisional |= not verdict.official
            counted += verdict.working
        return Deadline(day, provisional)

    def add_calendar_days(self, start: dt.date, n: int, *, extend_past_holidays: bool = True) -> Deadline:
        """The last day of a period of `n` calendar days after `start`.

        Administrative Penalty Law Art. 85 makes only its periods of 2, 3, 5 and 7 days working days;
        its 15-, 60- and 90-day periods are calendar days. Counting starts the day after `start`
        (Civil Code Art. 201). If the last day is not a working day, the period ends on the first
        working day after it (Civil Code Art. 203: 期间的最后一日是法定休假日的，以法定休假日结束的次日为
        期间的最后一日; the Civil Procedure Law's period rule says the same). "法定休假日" is read as
        any day off in the official schedule, weekends included; a make-up working weekend day
        (调休上班) is a working day and does not extend the period.

        With `extend_past_holidays=False` the plain date is returned, never provisional; with it, the
        deadline is provisional if any day examined for the extension lacks official data.
        """
        _require_date(start, "start")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        day = start + dt.timedelta(days=n)
        provisional = False
        if extend_past_holidays:
            while True:
                verdict = self.is_working_day(day)
                provisional |= not verdict.official
                if verdict.working:
                    break
                day += dt.timedelta(days=1)
        return Deadline(day, provisional)

    def working_days_between(self, a: dt.date, b: dt.date) -> WorkingDayCount:
        """The number of working days after `a` up to and including `b`."""
        _require_date(a, "a")
        _require_date(b, "b")
        if b < a:
            raise ValueError(f"b ({b}) is before a ({a})")
        days, provisional = 0, False
        day, one = a, dt.timedelta(days=1)
        while day < b:
            day += one
            verdict = self.is_working_day(day)
            provisional |= not verdict.official
            days += verdict.working
        return WorkingDayCount(days, provisional)

    def _is_official(self, day: dt.date) -> bool:
        if day.year not in self._years:
            return False
        return not _in_notice_reach(day) or day.year + 1 in self._years
