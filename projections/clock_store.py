"""SQL side of clocks: per batch, one read of the touched clocks, one upsert of their new state.

Clocks are merged in Python (load, apply, write) because a clock's deadline depends on the rule,
the unit's override and the working-day calendar, which SQL cannot compute.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from events.clock_rules import ClockRule, ClockRules
from events.envelope import TYPE_PREFIX
from projections import clocks as engine
from projections.db import upsert
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


def _utc(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; every stored time is UTC.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def state_from_row(row: Row[Any] | Mapping[str, Any]) -> engine.ClockState:
    m = row._mapping if isinstance(row, Row) else row
    values = {name: m[name] for name in _STATE_COLUMNS}
    for name in ("started_at", "reset_at", "stopped_at", "acknowledged_at", "paused_at", "resumed_at"):
        values[name] = _utc(values[name])
    return engine.ClockState(
        clock_id=m["clock_id"],
        rule_id=m["rule_id"],
        area=m["area"],
        subject=m["subject"],
        party=m["party"],
        fired=frozenset(x for x in m["fired"].split(",") if x),
        withdrawn=frozenset(x for x in m["withdrawn"].split(",") if x),
        **values,
    )


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
    row = {name: getattr(state, name) for name in _STATE_COLUMNS}
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
    if not rows:
        return
    stmt = upsert(conn, clocks_table)
    set_ = {c.name: stmt.excluded[c.name] for c in clocks_table.c if c.name != "clock_id"}
    await conn.execute(stmt.on_conflict_do_update(index_elements=["clock_id"], set_=set_), list(rows))


class ClockProjection:
    """Starts, stops, resets and extends clocks; records acknowledgements for re-escalation."""

    name = "clocks"

    def __init__(
        self,
        rules: ClockRules,
        calendar: engine.Calendar,
        settings: ClockSettings,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._rules = rules
        self._calendar = calendar
        self._settings = settings
        self._areas = {r.area for r in rules.rules.values()}
        self._now = now or (lambda: datetime.now(UTC))

    def handles(self, event_type: str) -> bool:
        area = event_type.removeprefix(TYPE_PREFIX).split(".", 1)[0]
        return area in self._areas or event_type == ACKNOWLEDGED

    async def write(self, conn: AsyncConnection, events: Sequence[Positioned]) -> None:
        ordered = sorted((p.event for p in events), key=lambda e: e.time)
        touched = engine.touched(self._rules, ordered)
        acks = [e for e in ordered if e.type == ACKNOWLEDGED]
        keys = {engine.clock_id(r.id, e.area, e.subject, party) for r, _, e, party in touched}
        keys |= {e.subject for e in acks}
        if not keys:
            return
        rows = await conn.execute(select(clocks_table).where(clocks_table.c.clock_id.in_(keys)))
        states = {row.clock_id: state_from_row(row) for row in rows}
        case_facts = await self._case_facts(conn, {e.subject for _, _, e, _ in touched if e.area == "case"})
        for rule, role, event, party in touched:
            key = engine.clock_id(rule.id, event.area, event.subject, party)
            state = states.get(key) or engine.ClockState(key, rule.id, event.area, event.subject, party)
            if role == "start" and state.responsible is None:
                responsible, township, case_id = self._who(rule, event, party, case_facts.get(event.subject))
                state = replace(state, responsible=responsible, township=township, case_id=case_id)
            states[key] = engine.apply(state, rule, role, event)
        for ack in acks:
            acked = states.get(ack.subject)
            if acked is not None and (acked.acknowledged_at is None or ack.time > acked.acknowledged_at):
                states[ack.subject] = replace(acked, acknowledged_at=ack.time)
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
    async def _case_facts(
        conn: AsyncConnection, case_ids: set[str]
    ) -> dict[str, tuple[str | None, str | None]]:
        if not case_ids:
            return {}
        rows = await conn.execute(
            select(cases.c.case_id, cases.c.handling_unit, cases.c.township).where(
                cases.c.case_id.in_(case_ids)
            )
        )
        return {r.case_id: (r.handling_unit, r.township) for r in rows}

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
