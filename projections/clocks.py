"""Clocks (pure): one per (rule, subject, party). Events start, stop, reset and extend them; the
deadline comes from the rule, the working-day calendar and the unit's override; the warning ladder
says when to warn, when the deadline passed, and when to escalate.

Every function here takes time as an argument: nothing reads the wall clock.
"""

from __future__ import annotations

import hashlib
import uuid
from calendar import monthrange
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta, timezone
from functools import lru_cache
from operator import attrgetter
from typing import Any, Protocol

from events.clock_rules import ClockRule, ClockRules
from events.envelope import Envelope

CHINA = timezone(timedelta(hours=8), "Asia/Shanghai")
LEVELS = ("yellow", "red", "escalated")
_NAMESPACE = uuid.UUID("5d0c2b8e-61f4-4a8b-9b1e-2f7d6c3a9e40")


class DeadlineLike(Protocol):
    @property
    def date(self) -> date: ...

    @property
    def provisional(self) -> bool: ...


class Calendar(Protocol):
    @property
    def version(self) -> str: ...

    def add_working_days(self, start: date, n: int) -> DeadlineLike: ...

    def add_calendar_days(self, start: date, n: int) -> DeadlineLike: ...


class CachedCalendar:
    """A calendar whose answers are remembered: a batch starts hundreds of clocks on the same few
    days, and each working-day count walks the calendar day by day. The answers depend only on
    the arguments and on the calendar's data, which the version names and which never changes
    for one calendar object."""

    __slots__ = ("_calendar", "_calendar_days", "_limit", "_working_days")

    def __init__(self, calendar: Calendar, limit: int = 100_000) -> None:
        self._calendar = calendar
        self._limit = limit
        self._working_days: dict[tuple[date, int], DeadlineLike] = {}
        self._calendar_days: dict[tuple[date, int], DeadlineLike] = {}

    @property
    def version(self) -> str:
        return self._calendar.version

    def add_working_days(self, start: date, n: int) -> DeadlineLike:
        key = (start, n)
        found = self._working_days.get(key)
        if found is None:
            found = self._calendar.add_working_days(start, n)
            self._remember(self._working_days, key, found)
        return found

    def add_calendar_days(self, start: date, n: int) -> DeadlineLike:
        key = (start, n)
        found = self._calendar_days.get(key)
        if found is None:
            found = self._calendar.add_calendar_days(start, n)
            self._remember(self._calendar_days, key, found)
        return found

    def _remember(
        self, cache: dict[tuple[date, int], DeadlineLike], key: tuple[date, int], value: DeadlineLike
    ) -> None:
        if len(cache) >= self._limit:
            cache.clear()  # a bound, not an eviction policy: the working set is a few hundred days
        cache[key] = value


def cached(calendar: Calendar) -> Calendar:
    return calendar if isinstance(calendar, CachedCalendar) else CachedCalendar(calendar)


@dataclass(frozen=True, slots=True)
class ClockState:
    clock_id: str
    rule_id: str
    area: str
    subject: str
    party: str
    responsible: str | None = None
    township: str | None = None
    case_id: str | None = None
    started_at: datetime | None = None
    start_deadline: date | None = None
    reset_at: datetime | None = None
    reset_deadline: date | None = None
    stopped_at: datetime | None = None
    extended_to: date | None = None
    paused_at: datetime | None = None
    resumed_at: datetime | None = None
    measured_from: date | None = None
    measured_date: date | None = None
    acknowledged_at: datetime | None = None
    fired: frozenset[str] = frozenset()
    withdrawn: frozenset[str] = frozenset()

    @property
    def effective_start(self) -> datetime | None:
        if self.started_at is None:
            return None
        return max(self.started_at, self.reset_at) if self.reset_at else self.started_at

    @property
    def paused(self) -> bool:
        start = self.effective_start
        if self.paused_at is None or start is None or self.paused_at < start:
            return False
        return self.resumed_at is None or self.resumed_at < self.paused_at

    @property
    def paused_for(self) -> timedelta:
        """The finished pause in this cycle, which the deadline is moved back by."""
        start = self.effective_start
        if self.paused_at is None or self.resumed_at is None or start is None or self.paused_at < start:
            return timedelta(0)
        return max(timedelta(0), self.resumed_at - self.paused_at)

    @property
    def open(self) -> bool:
        start = self.effective_start
        return start is not None and (self.stopped_at is None or self.stopped_at < start)


CLOCK_FIELDS = tuple(f.name for f in fields(ClockState))
_FIELD_INDEX = {name: i for i, name in enumerate(CLOCK_FIELDS)}
_ALL_FIELDS = attrgetter(*CLOCK_FIELDS)


def evolve(state: ClockState, changes: Mapping[str, Any]) -> ClockState:
    """`dataclasses.replace(state, **changes)` at a third of its cost: a batch folds tens of
    thousands of clock changes, and `replace` inspects the fields anew on every call."""
    values = list(_ALL_FIELDS(state))
    for name, value in changes.items():
        values[_FIELD_INDEX[name]] = value
    return ClockState(*values)


_NAMESPACE_BYTES = _NAMESPACE.bytes


def clock_id(rule_id: str, area: str, subject: str, party: str) -> str:
    """`uuid5(_NAMESPACE, "rule|area|subject|party").hex`, without building a UUID object: every
    event of every batch asks for its clocks' ids."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + f"{rule_id}|{area}|{subject}|{party}".encode()).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


def alert_id(clock: str, level: str, nth: str = "") -> str:
    """Deterministic: the same clock and level always give the same alert, across retries."""
    return str(uuid.uuid5(_NAMESPACE, f"alert|{clock}|{level}|{nth}"))


@lru_cache(maxsize=4096)
def end_of_day(d: date) -> datetime:
    return datetime.combine(d, time(23, 59, 59), CHINA).astimezone(UTC)


def local_date(moment: datetime) -> date:
    return moment.astimezone(CHINA).date()


def _as_date(value: Any) -> date | None:
    return value if isinstance(value, date) and not isinstance(value, datetime) else None


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def apply(state: ClockState, rule: ClockRule, role: str, event: Envelope) -> ClockState:
    """One event's effect on one clock. Arrival order does not matter: times merge by min/max.

    A pause is one interval: from the latest pause to the resume after it.
    """
    data = event.data
    if role == "start":
        if state.started_at is not None and event.time >= state.started_at:
            return state
        return evolve(
            state,
            {
                "started_at": event.time,
                "start_deadline": _as_date(data.get(rule.deadline_field or "")),
                "measured_from": _as_date(data.get(rule.from_field or "")),
                "measured_date": _as_date(data.get(rule.date_field or "")),
            },
        )
    if role == "stop":
        return evolve(state, {"stopped_at": _later(state.stopped_at, event.time)})
    if role == "reset":
        if state.reset_at is not None and event.time <= state.reset_at:
            return state
        # A new cycle: the ladder starts again, with alert ids of its own (see `alert_id`).
        return evolve(
            state,
            {
                "reset_at": event.time,
                "reset_deadline": _as_date(data.get(rule.deadline_field or "")),
                "fired": frozenset(),
                "withdrawn": frozenset(),
                "acknowledged_at": None,
            },
        )
    if role == "pause":
        return evolve(state, {"paused_at": _later(state.paused_at, event.time)})
    if role == "resume":
        return evolve(state, {"resumed_at": _later(state.resumed_at, event.time)})
    if role == "extend":
        new = _as_date(data.get(rule.extend_field or ""))
        if new is not None and (state.extended_to is None or new > state.extended_to):
            return evolve(state, {"extended_to": new})
    return state


@dataclass(frozen=True, slots=True)
class Schedule:
    """When the clock runs out and when each rung of the ladder is reached."""

    deadline: datetime
    provisional: bool
    thresholds: Mapping[str, datetime]
    violated: bool = False


def _add(rule: ClockRule, start: datetime, length: int, calendar: Calendar) -> tuple[datetime, bool]:
    if rule.unit == "hours":
        return start + timedelta(hours=length), False
    if rule.unit == "months":
        d = local_date(start)
        month = d.month - 1 + length
        year, month = d.year + month // 12, month % 12 + 1
        last = date(year, month, min(d.day, monthrange(year, month)[1]))
        # Like calendar-day periods, a period in months that ends on a day off runs to the next
        # working day (Civil Code Art. 203, applied to litigation by Administrative Litigation Law
        # Art. 101): adding one calendar day to the day before gives exactly that.
        result = calendar.add_calendar_days(last - timedelta(days=1), 1)
        return end_of_day(result.date), result.provisional
    add = calendar.add_working_days if rule.unit == "working_days" else calendar.add_calendar_days
    result = add(local_date(start), length)
    return end_of_day(result.date), result.provisional


def schedule(state: ClockState, rule: ClockRule, rules: ClockRules, calendar: Calendar) -> Schedule | None:
    start = state.effective_start
    if start is None:
        return None
    length = rules.length(rule, state.responsible)
    if rule.kind == "check":
        if state.measured_from is None:
            return None
        from_start = datetime.combine(state.measured_from, time(0), CHINA).astimezone(UTC)
        deadline, provisional = _add(rule, from_start, length, calendar)
        return Schedule(deadline, provisional, {"red": start}, violated=start > deadline)
    if rule.kind == "notice":
        if state.measured_date is None:
            return None
        deadline, provisional = _add(rule, start, length, calendar)
        too_short = end_of_day(state.measured_date) < deadline
        return Schedule(deadline, provisional, {"red": start}, violated=too_short)
    fixed = state.reset_deadline if state.reset_at else state.start_deadline
    if fixed is not None:
        deadline, provisional = end_of_day(fixed), False
    else:
        deadline, provisional = _add(rule, start, length, calendar)
    deadline += state.paused_for
    if state.extended_to is not None:
        deadline = max(deadline, end_of_day(state.extended_to))
    if deadline <= start:
        deadline = start
    yellow = start + (deadline - start) * rules.ladder.yellow_fraction
    escalate = calendar.add_working_days(local_date(deadline), rules.ladder.escalate_after_working_days)
    thresholds = {"yellow": yellow, "red": deadline, "escalated": end_of_day(escalate.date)}
    return Schedule(deadline, provisional or escalate.provisional, thresholds)


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # raise | withdraw
    level: str
    threshold: datetime


def due(
    state: ClockState,
    rule: ClockRule,
    plan: Schedule | None,
    now: datetime,
    grace: timedelta,
    reescalate_after: timedelta,
) -> list[Action]:
    """What the scanner must do for this clock now. `grace` allows for projection lag: a loop that
    closed just before a threshold may not be projected yet, so a threshold fires only once it has
    passed by more than the grace."""
    if plan is None or not rule.alerts:
        return []
    actions: list[Action] = []
    if rule.kind in ("check", "notice"):
        if plan.violated and "red" not in state.fired and now >= plan.thresholds["red"]:
            actions.append(Action("raise", "red", plan.thresholds["red"]))
        return actions
    if state.open and state.paused:
        return actions
    if state.open:
        reached = [lv for lv in LEVELS if now >= plan.thresholds[lv] + grace]
        if reached and reached[-1] not in state.fired:
            # After an outage, only the highest rung reached is raised; the lower ones are moot.
            actions.append(Action("raise", reached[-1], plan.thresholds[reached[-1]]))
        ack = state.acknowledged_at
        if ack is not None and "re_escalated" not in state.fired and now >= ack + reescalate_after:
            actions.append(Action("raise", "re_escalated", ack + reescalate_after))
        return actions
    stopped = state.stopped_at
    for level in sorted(state.fired - state.withdrawn):
        threshold = plan.thresholds.get(level)
        if stopped is not None and threshold is not None and stopped < threshold:
            actions.append(Action("withdraw", level, threshold))
    return actions


def next_check(
    state: ClockState,
    rule: ClockRule,
    plan: Schedule | None,
    grace: timedelta,
    reescalate_after: timedelta,
) -> datetime | None:
    """The earliest moment `due` may return something: what the scanner's index is built on."""
    if plan is None or not rule.alerts:
        return None
    if rule.kind in ("check", "notice"):
        return plan.thresholds["red"] if plan.violated and "red" not in state.fired else None
    if state.open and state.paused:
        return None  # a resume event will recompute the schedule
    if state.open:
        # A rung at or below the highest one fired will never fire: only later rungs count.
        highest = max((LEVELS.index(lv) for lv in state.fired if lv in LEVELS), default=-1)
        candidates = [plan.thresholds[lv] + grace for i, lv in enumerate(LEVELS) if i > highest]
        if state.acknowledged_at is not None and "re_escalated" not in state.fired:
            candidates.append(state.acknowledged_at + reescalate_after)
        return min(candidates, default=None)
    pending = [
        plan.thresholds[lv]
        for lv in state.fired - state.withdrawn
        if lv in plan.thresholds and state.stopped_at is not None and state.stopped_at < plan.thresholds[lv]
    ]
    return state.stopped_at if pending else None


def parties(rule: ClockRule, event: Envelope) -> list[str]:
    """The parties a start event opens clocks for ('' when the rule is not per party)."""
    if rule.per_party is None:
        return [""]
    value = event.data.get(rule.per_party)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def stop_party(rule: ClockRule, event: Envelope) -> str:
    if rule.per_party is None:
        return ""
    named = event.data.get(rule.party_field or "") if rule.party_field else None
    return named if isinstance(named, str) else event.source


_Conditions = Mapping[str, tuple[Any, ...]]


class Triggers:
    """Each rule's triggers, indexed by (area, event name), in the order `ClockRule.role` tries
    them (start, stop, reset, extend, pause, resume): every event of every batch asks which
    clocks it concerns, and only the triggers that name its event can answer."""

    __slots__ = ("_index",)

    def __init__(self, rules: ClockRules) -> None:
        index: dict[tuple[str, str], list[tuple[ClockRule, tuple[tuple[str, _Conditions], ...]]]] = {}
        for rule in rules.rules.values():
            roles = (
                ("start", rule.start),
                ("stop", rule.stop),
                ("reset", rule.reset),
                ("extend", rule.extend),
                ("pause", rule.pause),
                ("resume", rule.resume),
            )
            for name in dict.fromkeys(t.event for _, triggers in roles for t in triggers):
                mine = tuple((role, t.when) for role, triggers in roles for t in triggers if t.event == name)
                index.setdefault((rule.area, name), []).append((rule, mine))
        self._index = {key: tuple(entries) for key, entries in index.items()}

    def touched(self, events: Iterable[Envelope]) -> list[tuple[ClockRule, str, Envelope, str]]:
        """(rule, role, event, party) for every clock an event concerns."""
        out: list[tuple[ClockRule, str, Envelope, str]] = []
        for event in events:
            for rule, triggers in self._index.get((event.area, event.event_name), ()):
                role = _first_role(triggers, event.data)
                if role is not None:
                    _concerned(out, rule, role, event)
        return out


def _first_role(triggers: tuple[tuple[str, _Conditions], ...], data: Mapping[str, Any]) -> str | None:
    for role, when in triggers:
        if all(data.get(name) in allowed for name, allowed in when.items()):
            return role
    return None


def _concerned(
    out: list[tuple[ClockRule, str, Envelope, str]], rule: ClockRule, role: str, event: Envelope
) -> None:
    if role == "start":
        out += [(rule, role, event, party) for party in parties(rule, event)]
    elif role == "stop":
        out.append((rule, role, event, stop_party(rule, event)))
    elif rule.per_party is None:  # reset, extend, pause and resume concern the whole matter
        out.append((rule, role, event, ""))


def touched(rules: ClockRules, events: Iterable[Envelope]) -> list[tuple[ClockRule, str, Envelope, str]]:
    """(rule, role, event, party) for every clock an event concerns."""
    return Triggers(rules).touched(events)
