"""The clock scanner: raise, escalate and withdraw alerts when wall-clock thresholds pass.

It claims due clocks with `FOR UPDATE SKIP LOCKED`, so several workers share the work and a
worker that dies mid-scan only releases its claims. Alerts are published (acknowledged by the
broker) before the clock rows record them; a crash in between publishes the same deterministic
alert ids again, which every consumer deduplicates. So each alert is seen once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.clock_rules import ClockRule, ClockRules
from events.directory import Directory
from events.envelope import TYPE_PREFIX, Envelope
from projections import clocks as engine
from projections.clock_store import ClockSettings, state_from_row, state_row, write_states
from projections.schema import clocks as clocks_table

RAISED = TYPE_PREFIX + "alert.raised.v1"
WITHDRAWN = TYPE_PREFIX + "alert.withdrawn.v1"
HUB_SOURCE = "liandong.hub"
ORDER_REPLY_WORKING_DAYS = 5


class AlertSink(Protocol):
    async def publish(self, events: Sequence[Envelope]) -> None:
        """Return only once the broker acknowledged every event."""
        ...


@dataclass(slots=True)
class ScanResult:
    raised: int = 0
    withdrawn: int = 0
    recomputed: int = 0


class ClockScanner:
    def __init__(
        self,
        db: AsyncEngine,
        rules: ClockRules,
        calendar: engine.Calendar,
        directory: Directory,
        settings: ClockSettings,
        sink: AlertSink,
        batch: int = 500,
    ) -> None:
        self._db = db
        self._rules = rules
        self._calendar = calendar
        self._directory = directory
        self._settings = settings
        self._sink = sink
        self._batch = batch
        # The calendar is loaded once per process: once a recompute pass finds nothing left to
        # recompute, later passes would only scan the table again for nothing.
        self._recompute_pending = True

    async def scan(self, now: datetime) -> ScanResult:
        """One pass: recompute provisional deadlines if the calendar changed, then act on due clocks."""
        result = ScanResult()
        if self._recompute_pending:
            result.recomputed = await self._recompute(now)
            self._recompute_pending = result.recomputed >= self._batch
        while True:
            raised, withdrawn, claimed = await self._scan_batch(now)
            result.raised += raised
            result.withdrawn += withdrawn
            if claimed < self._batch:
                return result

    async def _recompute(self, now: datetime) -> int:
        t = clocks_table.c
        async with self._db.begin() as conn:
            rows = await conn.execute(
                select(clocks_table)
                .where(t.provisional, t.calendar_version != self._calendar.version)
                .limit(self._batch)
                .with_for_update(skip_locked=True)
            )
            updated = [self._row(state_from_row(r), now) for r in rows if r.rule_id in self._rules.rules]
            await write_states(conn, updated)
        return len(updated)

    async def _scan_batch(self, now: datetime) -> tuple[int, int, int]:
        t = clocks_table.c
        async with self._db.begin() as conn:
            rows = (
                await conn.execute(
                    select(clocks_table)
                    .where(t.next_check_at <= now)
                    .order_by(t.next_check_at)
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            events: list[Envelope] = []
            updated: list[dict[str, Any]] = []
            raised = withdrawn = 0
            for row in rows:
                rule = self._rules.rules.get(row.rule_id)
                state = state_from_row(row)
                if rule is None:
                    continue
                plan = engine.schedule(state, rule, self._rules, self._calendar)
                actions = engine.due(
                    state, rule, plan, now, self._settings.grace, self._settings.reescalate_after
                )
                for action in actions:
                    if plan is None:
                        continue
                    if action.kind == "raise":
                        events.append(self._raised(state, rule, plan, action, now))
                        state = replace(state, fired=state.fired | {action.level})
                        raised += 1
                    else:
                        events.append(self._withdrawn(state, action))
                        state = replace(state, withdrawn=state.withdrawn | {action.level})
                        withdrawn += 1
                updated.append(self._row(state, now))
            if events:
                await self._sink.publish(events)
            await write_states(conn, updated)
        return raised, withdrawn, len(rows)

    def _row(self, state: engine.ClockState, now: datetime) -> dict[str, Any]:
        rule = self._rules.rules[state.rule_id]
        return state_row(state, rule, self._rules, self._calendar, self._settings, now)

    def _cycle(self, state: engine.ClockState) -> str:
        start = state.effective_start
        return start.isoformat() if start else ""

    def _recipients(self, state: engine.ClockState, level: str) -> list[str]:
        units: list[str] = [state.responsible] if state.responsible else []
        office = f"{state.township}.enforcement-office" if state.township else ""
        if level == "red" and office in self._directory.units:
            units.append(office)
        if level in ("escalated", "re_escalated"):
            units.append(self._rules.ladder.supervisor)
        return list(dict.fromkeys(units))

    def _raised(
        self,
        state: engine.ClockState,
        rule: ClockRule,
        plan: engine.Schedule,
        action: engine.Action,
        now: datetime,
    ) -> Envelope:
        nth = self._cycle(state) if action.level != "re_escalated" else f"{state.acknowledged_at}"
        alert = engine.alert_id(state.clock_id, action.level, nth)
        overdue = max(0, int((now - plan.deadline).total_seconds()))
        order = None
        if action.level in ("escalated", "re_escalated") and state.responsible:
            days = overdue // 86400
            reply_by = self._calendar.add_working_days(engine.local_date(now), ORDER_REPLY_WORKING_DAYS).date
            order = {
                "to_unit": state.responsible,
                "reason": f"{rule.name_zh}已超期 {days} 天 | {rule.name_en} is {days} days overdue",
                "reply_by": reply_by,
            }
        data = {
            "alert_id": alert,
            "rule_id": rule.id,
            "rule_version": rule.version,
            "rule_name_zh": rule.name_zh,
            "rule_name_en": rule.name_en,
            "citation": rule.citation,
            "level": action.level,
            "about_area": state.area,
            "about_subject": state.subject,
            "party": state.party or None,
            "responsible_unit": state.responsible,
            "township": state.township,
            "started_at": state.effective_start,
            "deadline": plan.deadline,
            "threshold": action.threshold,
            "overdue_seconds": overdue,
            "provisional": plan.provisional,
            "recipients": self._recipients(state, action.level),
            "proposed_order": order,
            "case_id": state.case_id,
        }
        return Envelope(alert, RAISED, HUB_SOURCE, state.clock_id, now, data)

    def _withdrawn(self, state: engine.ClockState, action: engine.Action) -> Envelope:
        alert = engine.alert_id(state.clock_id, action.level, self._cycle(state))
        event_id = str(uuid.uuid5(uuid.UUID(alert), "withdrawn"))
        data = {
            "alert_id": alert,
            "level": action.level,
            "reason": "closed_before_threshold",
            "closed_at": state.stopped_at,
            "case_id": state.case_id,
        }
        time = state.stopped_at or action.threshold
        return Envelope(event_id, WITHDRAWN, HUB_SOURCE, state.clock_id, max(time, action.threshold), data)
