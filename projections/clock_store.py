"""SQL side of clocks: per batch, one read of the touched clocks, one upsert of their new state.

Clocks are merged in Python (load, apply, write) because a clock's deadline depends on the rule,
the unit's override and the working-day calendar, which SQL cannot compute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter, itemgetter
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.clock_rules import ClockRule, ClockRules
from events.envelope import TYPE_PREFIX, Envelope
from projections import clocks as engine
from projections.bulk import any_of, merge
from projections.runtime import Positioned
from projections.schema import cases
from projections.schema import clocks as clocks_table

ACKNOWLEDGED = TYPE_PREFIX + "alert.acknowledged.v1"
_STATE_COLUMNS = (
    "responsible",
    "township",
    "case_id",
    "started_at",
    "start_deadline",
    "reset_at",
    "reset_deadline",
    "stopped_at",
    "extended_to",
    "paused_at",
    "resumed_at",
    "measured_from",
    "measured_date",
    "acknowledged_at",
)


_STATE_VALUES = attrgetter(*_STATE_COLUMNS)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; every stored time is UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


# Every field of a ClockState is a column of the same name; the sets of levels are stored as text.
_ROW_VALUES = itemgetter(*engine.CLOCK_FIELDS)
_TIMES = tuple(
    i
    for i, name in enumerate(engine.CLOCK_FIELDS)
    if name in ("started_at", "reset_at", "stopped_at", "acknowledged_at", "paused_at", "resumed_at")
)
_LEVELS = tuple(i for i, name in enumerate(engine.CLOCK_FIELDS) if name in ("fired", "withdrawn"))


def state_from_row(row: Row[Any] | Mapping[str, Any]) -> engine.ClockState:
    """A clock as stored, read by position: a batch reads thousands of them."""
    values = list(_ROW_VALUES(row._mapping if isinstance(row, Row) else row))
    for i in _TIMES:
        values[i] = _utc(values[i])
    for i in _LEVELS:
        values[i] = _levels(values[i])
    return engine.ClockState(*values)


def _levels(text: str) -> frozenset[str]:
    return frozenset(filter(None, text.split(","))) if text else frozenset()


@dataclass(frozen=True, slots=True)
class ClockSettings:
    grace: timedelta
    reescalate_after: timedelta


def state_row(
    state: engine.ClockState,
    rule: ClockRule,
    rules: ClockRules,
    calendar: engine.Calendar,
    settings: ClockSettings,
    now: datetime,
) -> dict[str, Any]:
    plan = engine.schedule(state, rule, rules, calendar)
    row = dict(zip(_STATE_COLUMNS, _STATE_VALUES(state), strict=True))
    row.update(
        clock_id=state.clock_id,
        rule_id=state.rule_id,
        rule_version=rule.version,
        area=state.area,
        subject=state.subject,
        party=state.party,
        fired=",".join(sorted(state.fired)),
        withdrawn=",".join(sorted(state.withdrawn)),
        deadline=plan.deadline if plan else None,
        provisional=plan.provisional if plan else False,
        calendar_version=calendar.version,
        next_check_at=engine.next_check(state, rule, plan, settings.grace, settings.reescalate_after),
        updated_at=now,
    )
    return row


async def write_states(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Upsert whole clock rows (one per clock id)."""
    await merge(conn, clocks_table, rows, _whole_row)


def _whole_row(stmt: Any) -> Any:
    set_ = {c.name: stmt.excluded[c.name] for c in clocks_table.c if c.name != "clock_id"}
    return stmt.on_conflict_do_update(index_elements=["clock_id"], set_=set_)


class ClockProjection:
    """Starts, stops, resets and extends clocks; records acknowledgements for re-escalation."""

    name = "clocks"
    tables = ("clocks",)  # what `liandong projections rebuild` swaps

    def __init__(
        self,
        rules: ClockRules,
        calendar: engine.Calendar,
        settings: ClockSettings,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._rules = rules
        self._calendar = engine.cached(calendar)
        self._triggers = engine.Triggers(rules)
        self._settings = settings
        self._areas = {r.area for r in rules.rules.values()}
        self._now = now or (lambda: datetime.now(UTC))

    def handles(self, event_type: str) -> bool:
        area = event_type.removeprefix(TYPE_PREFIX).split(".", 1)[0]
        return area in self._areas or event_type == ACKNOWLEDGED

    async def write(self, conn: AsyncConnection, events: Sequence[Positioned]) -> None:
        ordered = sorted((p.event for p in events), key=lambda e: e.time)
        await self._late_townships(conn, ordered)
        # Each clock's changes, in time order: its id is computed once, and its state is folded
        # once per batch, however many of the batch's events concern it.
        changes: dict[str, list[tuple[ClockRule, str, Envelope, str]]] = {}
        for change in self._triggers.touched(ordered):
            rule, _role, event, party = change
            key = engine.clock_id(rule.id, event.area, event.subject, party)
            mine = changes.get(key)
            if mine is None:
                changes[key] = [change]
            else:
                mine.append(change)
        acks = [e for e in ordered if e.type == ACKNOWLEDGED]
        keys = set(changes) | {e.subject for e in acks}
        if not keys:
            return
        # Locked, in key order: a scanner that claimed one of these clocks finishes first (and the
        # scanner skips the rows locked here), so neither overwrites the other's `fired`. The order
        # keeps two workers that touch the same clocks from deadlocking.
        rows = await conn.execute(
            select(clocks_table)
            .where(any_of(conn, clocks_table.c.clock_id, keys))
            .order_by(clocks_table.c.clock_id)
            .with_for_update()
        )
        states = {row.clock_id: state_from_row(row) for row in rows}
        case_ids = {e.subject for mine in changes.values() for _, _, e, _ in mine if e.area == "case"}
        case_facts = await self._case_facts(conn, case_ids)
        for key, mine in changes.items():
            state = states.get(key)
            if state is None:
                state = self._new(key, *mine[0], case_facts)
            for rule, role, event, party in mine:
                if role == "start" and state.responsible is None:
                    responsible, township, case_id = self._who(
                        rule, event, party, case_facts.get(event.subject)
                    )
                    who = {"responsible": responsible, "township": township, "case_id": case_id}
                    state = engine.evolve(state, who)
                state = engine.apply(state, rule, role, event)
            states[key] = state
        for ack in acks:
            acked = states.get(ack.subject)
            if acked is not None and (acked.acknowledged_at is None or ack.time > acked.acknowledged_at):
                states[ack.subject] = engine.evolve(acked, {"acknowledged_at": ack.time})
        now = self._now()
        await write_states(
            conn,
            [
                state_row(s, self._rules.rules[s.rule_id], self._rules, self._calendar, self._settings, now)
                for s in states.values()
                if s.rule_id in self._rules.rules
            ],
        )

    @staticmethod
    async def _late_townships(conn: AsyncConnection, ordered: Sequence[Envelope]) -> None:
        """A case's clock started before its filing arrived names no township; fill it in now.

        Without this the clock's township (who sees its alerts) would depend on arrival order, and
        a rebuild, which meets the filing in the same batch, would differ from the live store.
        """
        named = {e.subject for e in ordered if e.area == "case" and isinstance(e.data.get("township"), str)}
        if not named:
            return
        c = clocks_table.c
        await conn.execute(
            update(clocks_table)
            .where(c.area == "case", any_of(conn, c.subject, named), c.township.is_(None))
            .values(township=select(cases.c.township).where(cases.c.case_id == c.subject).scalar_subquery())
        )

    @staticmethod
    async def _case_facts(
        conn: AsyncConnection, case_ids: set[str]
    ) -> dict[str, tuple[str | None, str | None]]:
        if not case_ids:
            return {}
        rows = await conn.execute(
            select(cases.c.case_id, cases.c.handling_unit, cases.c.township).where(
                any_of(conn, cases.c.case_id, case_ids)
            )
        )
        return {r.case_id: (r.handling_unit, r.township) for r in rows}

    def _new(
        self,
        key: str,
        rule: ClockRule,
        role: str,
        event: Envelope,
        party: str,
        case_facts: Mapping[str, tuple[str | None, str | None]],
    ) -> engine.ClockState:
        if role != "start":
            return engine.ClockState(key, rule.id, event.area, event.subject, party)
        # Who is responsible is settled by the first start: built in, not replaced after.
        responsible, township, case_id = self._who(rule, event, party, case_facts.get(event.subject))
        return engine.ClockState(
            key,
            rule.id,
            event.area,
            event.subject,
            party,
            responsible=responsible,
            township=township,
            case_id=case_id,
        )

    @staticmethod
    def _who(
        rule: ClockRule, event: Any, party: str, case: tuple[str | None, str | None] | None
    ) -> tuple[str | None, str | None, str | None]:
        named = event.data.get(rule.responsible_field) if rule.responsible_field else None
        handling, case_township = case or (None, None)
        responsible = party or (named if isinstance(named, str) else None) or handling or event.source
        township = event.data.get("township")
        case_id = event.subject if event.area == "case" else event.data.get("case_id")
        return (
            responsible,
            township if isinstance(township, str) else case_township,
            case_id if isinstance(case_id, str) else None,
        )
