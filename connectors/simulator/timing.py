"""Simulated time: office hours on China's working-day calendar, in China Standard Time.

People act during office hours on working days (make-up weekends included), so the hub's
working-day clocks see realistic gaps; deadlines are computed with the hub's own calendar so that
a step drawn "within 7 working days" really is within the hub's 7 working days.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta, timezone

from events.calendar import WorkingDayCalendar

CST = timezone(timedelta(hours=8))
_DAY = timedelta(days=1)
# Office hours: 08:30-12:00 and 14:00-17:30, as minutes after midnight.
_MORNING = (8 * 60 + 30, 12 * 60)
_AFTERNOON = (14 * 60, 17 * 60 + 30)


def year_bounds(year: int) -> tuple[datetime, datetime]:
    return datetime(year, 1, 1, tzinfo=CST), datetime(year + 1, 1, 1, tzinfo=CST)


class Days:
    """Working-day arithmetic with a cache: the model asks about the same few hundred days a lot."""

    def __init__(self, calendar: WorkingDayCalendar | None = None) -> None:
        self._calendar = calendar or WorkingDayCalendar.load()
        self._working: dict[date, bool] = {}

    def is_working(self, day: date) -> bool:
        known = self._working.get(day)
        if known is None:
            known = self._working[day] = self._calendar.is_working_day(day).working
        return known

    def add_working(self, day: date, n: int) -> date:
        """The day on which `n` working days after `day` are complete (the hub's own counting)."""
        counted = 0
        while counted < n:
            day += _DAY
            counted += self.is_working(day)
        return day

    def sub_working(self, day: date, n: int) -> date:
        """The working day `n` working days before `day`."""
        counted = 0
        while counted < n:
            day -= _DAY
            counted += self.is_working(day)
        return day

    def add_calendar(self, day: date, n: int) -> date:
        """`n` calendar days later; a period ending on a day off runs to the next working day."""
        return self.on_or_after(day + timedelta(days=n))

    def on_or_after(self, day: date) -> date:
        while not self.is_working(day):
            day += _DAY
        return day

    def office_time(self, day: date, rng: random.Random, after: datetime | None = None) -> datetime:
        """A moment in office hours on `day`, later than `after`; the next working day if none is left."""
        day = self.on_or_after(day)
        floor = -1
        if after is not None:
            local = after.astimezone(CST)
            if local.date() > day:
                day = self.on_or_after(local.date())
            if local.date() == day:
                floor = local.hour * 60 + local.minute
        # Minutes at least five after `floor`, in either half of the day.
        free = [(max(lo, floor + 5), hi) for lo, hi in (_MORNING, _AFTERNOON) if hi > floor + 5]
        total = sum(hi - lo for lo, hi in free)
        if total <= 0:
            return self.office_time(self.add_working(day, 1), rng)
        pick = rng.randrange(total)
        for lo, hi in free:
            if pick < hi - lo:
                minute = lo + pick
                break
            pick -= hi - lo
        return datetime.combine(day, time(minute // 60, minute % 60, rng.randrange(60)), CST)

    def any_time(self, day: date, rng: random.Random, start_hour: int = 7, end_hour: int = 23) -> datetime:
        """Patrols and complaints happen any day, mostly by day and in the evening."""
        seconds = rng.randrange(start_hour * 3600, end_hour * 3600)
        return datetime.combine(day, time(0), CST) + timedelta(seconds=seconds)

    def after_wd(self, start: datetime, span: tuple[int, int], rng: random.Random) -> datetime:
        """An office moment `span` working days after `start` (0 = later the same working day)."""
        n = rng.randint(*span)
        day = self.add_working(start.astimezone(CST).date(), n)
        return self.office_time(day, rng, after=start)

    def after_cd(self, start: datetime, span: tuple[int, int], rng: random.Random) -> datetime:
        """An office moment `span` calendar days after `start`, moved to a working day."""
        n = rng.randint(*span)
        day = start.astimezone(CST).date() + timedelta(days=n)
        return self.office_time(day, rng, after=start)

    def deadline_wd(self, start: datetime, n: int) -> date:
        return self.add_working(start.astimezone(CST).date(), n)

    def deadline_cd(self, start: datetime, n: int) -> date:
        return self.add_calendar(start.astimezone(CST).date(), n)

    def late_after(self, deadline: date, span: tuple[int, int], rng: random.Random) -> datetime:
        """An office moment `span` working days after a deadline day: the receipt came late."""
        return self.office_time(self.add_working(deadline, rng.randint(*span)), rng)

    def working_days_in(self, year: int) -> list[date]:
        start, end = date(year, 1, 1), date(year + 1, 1, 1)
        every = (start + timedelta(days=i) for i in range((end - start).days))
        return [day for day in every if self.is_working(day)]
