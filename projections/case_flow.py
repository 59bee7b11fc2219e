"""Spikes and silences in a township's weekly case flow (立案量异常): a periodic sweep.

No single event causes a spike or a silence, so this is not part of the projector: a worker timer
calls `detect_case_flow` (every minute is cheap), and each run re-derives every complete week.

The rule, per township (docs/analysis.md):

- weeks run Monday 00:00 to Monday 00:00, China time (UTC+8), and count `cases.filed_at`;
- only complete, observed weeks are judged: the week starts on or after the day of the earliest
  filing anywhere (the data begins there), and ends at or before both `now` and the newest filing
  anywhere (so a simulated year in the past is analysed too, and a week still filling is not);
- the baseline is the township's previous `BASELINE_WEEKS` observed weeks (zeros included); a
  week without that many observed weeks before it is not judged;
- offices file on working days: the week's expected count is the baseline's filings per working
  day times the week's working days (the official calendar, make-up weekends included). For a
  week of five working days after weeks of five, that is the baseline's mean; a Spring Festival
  week expects (nearly) nothing, so it is neither a silence nor a drag on later baselines;
- **spike**: count > expected + `SPIKE_SIGMAS`·√max(expected, 1), and count ≥
  `SPIKE_RATIO`·expected, and count ≥ `SPIKE_MIN_CASES`; a Poisson flow passes three standard
  deviations about once in a thousand weeks, the other two keep small townships quiet;
- **silence**: count = 0 while expected ≥ `SILENCE_MIN_MEAN`: a Poisson P(0) = e^-expected < e^-5.

Anomaly ids come from (kind, township, week), so rerunning records nothing twice. A finding that a
late filing undoes (the backlog of a connector that was down) is marked resolved, and reopened if
it comes back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache
from typing import Any, Protocol

from sqlalchemy import Integer, cast, func, not_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.calendar import WorkingDayCalendar
from projections.anomalies import CASE_FLOW_SILENCE, CASE_FLOW_SPIKE, FLOW, anomaly_id
from projections.bulk import any_of, insert_new, is_postgresql
from projections.schema import anomalies, cases

CST = timezone(timedelta(hours=8))
WEEK = timedelta(days=7)
BASELINE_WEEKS = 8
SPIKE_SIGMAS = 3.0
SPIKE_RATIO = 2.0
SPIKE_MIN_CASES = 10
SILENCE_MIN_MEAN = 5.0

AREA = "township"
EVENT_TYPE = "case_flow.weekly"
KINDS = (CASE_FLOW_SPIKE, CASE_FLOW_SILENCE)

# Week 0 starts on Monday 5 January 1970, 00:00 China time.
_WEEK_ZERO = datetime(1970, 1, 5, tzinfo=CST)
_WEEK_SECONDS = int(WEEK.total_seconds())
# Seconds since the Unix epoch, plus this, are seconds since the start of week 0.
_SHIFT_SECONDS = int((datetime(1970, 1, 1, tzinfo=UTC) - _WEEK_ZERO).total_seconds())


class DayVerdict(Protocol):
    @property
    def working(self) -> bool: ...


class WorkingDays(Protocol):
    """What the sweep reads of the working-day calendar (`events.calendar.WorkingDayCalendar`)."""

    def is_working_day(self, day: date) -> DayVerdict: ...


@cache
def _shipped_calendar() -> WorkingDayCalendar:
    return WorkingDayCalendar.load()


def week_index(at: datetime) -> int:
    """The week (Monday to Sunday, China time) that `at` falls in."""
    return (at - _WEEK_ZERO) // WEEK


def week_start(index: int) -> datetime:
    return _WEEK_ZERO + index * WEEK


def judged_weeks(earliest: datetime, newest: datetime, now: datetime) -> range:
    """The weeks to judge: observed and complete, with a full baseline before each."""
    first = week_index(earliest)
    if earliest.astimezone(CST).weekday() != 0:
        first += 1  # the data begins mid-week: that week is partial
    # The last week whose end (the next Monday) is at or before both `now` and the newest filing.
    last = week_index(min(now, newest)) - 1
    return range(first + BASELINE_WEEKS, last + 1)


def working_days_of(calendar: WorkingDays, week: int) -> int:
    monday = week_start(week).date()
    return sum(calendar.is_working_day(monday + timedelta(days=i)).working for i in range(7))


def expected(counts: Sequence[int], working_days: Sequence[int], days: int) -> float:
    """The baseline's filings per working day, times the judged week's working days."""
    total = sum(working_days)
    return sum(counts) / total * days if total else 0.0


def spike_threshold(expected: float) -> float:
    return expected + SPIKE_SIGMAS * math.sqrt(max(expected, 1.0))


def classify(count: int, expected: float) -> str | None:
    if count == 0 and expected >= SILENCE_MIN_MEAN:
        return CASE_FLOW_SILENCE
    if count > spike_threshold(expected) and count >= SPIKE_RATIO * expected and count >= SPIKE_MIN_CASES:
        return CASE_FLOW_SPIKE
    return None


@dataclass(frozen=True, slots=True)
class FlowFinding:
    kind: str
    township: str
    week: int
    count: int
    expected: float

    @property
    def anomaly_id(self) -> str:
        return anomaly_id(self.kind, f"{self.township}|{week_start(self.week).date().isoformat()}")

    @property
    def detail(self) -> str:
        start = week_start(self.week).date()
        end = start + timedelta(days=6)
        if self.kind == CASE_FLOW_SPIKE:
            threshold = spike_threshold(self.expected)
            return (
                f"镇街 {self.township} {start}至{end}一周立案 {self.count} 宗，远高于按前 {BASELINE_WEEKS} 周"
                f"推算的 {self.expected:.1f} 宗（阈值 {threshold:.1f}） | Township {self.township}: "
                f"{self.count} cases filed in the week {start} to {end}, far above the "
                f"{self.expected:.1f} expected from the previous {BASELINE_WEEKS} weeks "
                f"(threshold {threshold:.1f})"
            )
        return (
            f"镇街 {self.township} {start}至{end}一周无立案，按前 {BASELINE_WEEKS} 周推算应有 "
            f"{self.expected:.1f} 宗 | Township {self.township}: no case filed in the week {start} to "
            f"{end}, against {self.expected:.1f} expected from the previous {BASELINE_WEEKS} weeks"
        )


def find(
    counts: Mapping[tuple[str, int], int],
    townships: Iterable[str],
    weeks: range,
    working_days: Callable[[int], int],
) -> list[FlowFinding]:
    """Spikes and silences of each township in `weeks`, against the weeks before (pure);
    `working_days(week)` is the number of working days in the week."""
    days = {w: working_days(w) for w in range(weeks.start - BASELINE_WEEKS, weeks.stop)}
    found = []
    for township in sorted(townships):
        for week in weeks:
            before = range(week - BASELINE_WEEKS, week)
            baseline = [counts.get((township, w), 0) for w in before]
            expect = expected(baseline, [days[w] for w in before], days[week])
            count = counts.get((township, week), 0)
            kind = classify(count, expect)
            if kind is not None:
                found.append(FlowFinding(kind, township, week, count, expect))
    return found


async def detect_case_flow(conn: AsyncConnection, now: datetime, calendar: WorkingDays | None = None) -> int:
    """Record the spikes and silences of every complete week; return how many are new.

    Runs in the caller's transaction. Idempotent: findings already recorded are left as they are.
    `now` is the wall clock of the sweep (naive means UTC); `calendar` defaults to the shipped
    working-day calendar.
    """
    now = _utc(now)
    counts, earliest, newest = await _weekly_counts(conn)
    if earliest is None or newest is None:
        return 0
    weeks = judged_weeks(earliest, newest, now)
    days = calendar or _shipped_calendar()
    found = find(counts, {t for t, _ in counts}, weeks, lambda w: working_days_of(days, w)) if weeks else []
    detected = now.astimezone(UTC)
    rows = [
        {
            "anomaly_id": f.anomaly_id,
            "subject": f.township,
            "area": AREA,
            "kind": f.kind,
            "category": FLOW,
            # No single event causes it: the weekly count does.
            "event_id": "",
            "event_type": EVENT_TYPE,
            "occurred_at": week_start(f.week).astimezone(UTC),
            "detected_at": detected,
            "resolved_at": None,
            "detail": f.detail,
            "township": f.township,
            "announced_at": None,
        }
        for f in found
    ]
    new = await insert_new(conn, anomalies, rows, "anomaly_id") if rows else set()
    await _settle(conn, [f.anomaly_id for f in found], weeks, detected)
    return len(new)


async def _weekly_counts(
    conn: AsyncConnection,
) -> tuple[dict[tuple[str, int], int], datetime | None, datetime | None]:
    """(township, week) -> filings, and the earliest and newest filing, in one grouped query."""
    c = cases.c
    filed = select(c.township, _week_of(conn, c.filed_at).label("week"), c.filed_at).where(
        c.township.is_not(None), c.filed_at.is_not(None)
    )
    sub = filed.subquery()
    rows = await conn.execute(
        select(
            sub.c.township, sub.c.week, func.count(), func.min(sub.c.filed_at), func.max(sub.c.filed_at)
        ).group_by(sub.c.township, sub.c.week)
    )
    counts: dict[tuple[str, int], int] = {}
    earliest: datetime | None = None
    newest: datetime | None = None
    for township, week, n, first, last in rows.all():
        counts[(township, int(week))] = int(n)
        first, last = _utc(first), _utc(last)
        earliest = first if earliest is None else min(earliest, first)
        newest = last if newest is None else max(newest, last)
    return counts, earliest, newest


def _week_of(conn: AsyncConnection, column: Any) -> Any:
    if is_postgresql(conn):
        seconds = func.extract("epoch", column) + _SHIFT_SECONDS
        return cast(func.floor(seconds / _WEEK_SECONDS), Integer)
    # SQLite keeps UTC text; strftime('%s') reads it as UTC. Integer division: weeks since 1970 are
    # never negative, so truncation is the floor.
    return (cast(func.strftime("%s", column), Integer) + _SHIFT_SECONDS) // _WEEK_SECONDS


async def _settle(conn: AsyncConnection, found: Sequence[str], weeks: range, now: datetime) -> None:
    """Resolve the findings of judged weeks that no longer hold; reopen those that hold again."""
    if not weeks:
        return
    a = anomalies.c
    judged = (
        a.kind.in_(KINDS),
        a.occurred_at >= week_start(weeks.start).astimezone(UTC),
        a.occurred_at <= week_start(weeks.stop - 1).astimezone(UTC),
    )
    await conn.execute(
        update(anomalies)
        .where(*judged, a.resolved_at.is_(None), not_(any_of(conn, a.anomaly_id, found)))
        .values(resolved_at=now)
    )
    if found:
        await conn.execute(
            update(anomalies)
            .where(*judged, a.resolved_at.is_not(None), any_of(conn, a.anomaly_id, found))
            .values(resolved_at=None)
        )


def _utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
