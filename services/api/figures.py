"""The analysis figures as grouped SQL aggregates that PostgreSQL and SQLite both run.

Every figure is a sum of `CASE WHEN <condition> THEN 1 ELSE 0 END` grouped by one column: no date
functions (the dialects differ there), only comparisons of stored UTC timestamps with bound ones.
Definitions are in docs/query-api.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, FromClause, and_, case, exists, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.case_registry import STAGE_RANKS
from projections.schema import alerts, cases, clocks, directory_units, matter_parties, matters
from services.api.labels import check_rules, duty_rules

Group = str | None
Counts = dict[Group, dict[str, Any]]
ESCALATED = ("escalated", "re_escalated")
REVOKED_OR_CHANGED = ("revoked", "changed")
REFERENCE_CASES_PER_OFFICER = 79.95


def count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def rate(numerator: int, denominator: int, digits: int = 4) -> float | None:
    return round(numerator / denominator, digits) if denominator else None


async def grouped(
    conn: AsyncConnection,
    key: ColumnElement[Any],
    measures: Mapping[str, ColumnElement[Any]],
    where: Iterable[ColumnElement[bool]],
    source: FromClause | None = None,
) -> Counts:
    names = list(measures)
    query = select(key.label("group"), *(measures[n].label(n) for n in names)).where(*where).group_by(key)
    if source is not None:
        query = query.select_from(source)
    out: Counts = {}
    for row in await conn.execute(query):
        values = row._mapping
        out[values["group"]] = {n: values[n] for n in names}
    return out


# --- cases ---------------------------------------------------------------------------------------

c = cases.c
CASE_CLOSED = or_(c.closed_at.is_not(None), c.stage_rank >= STAGE_RANKS["closed"])
CASE_MEASURES: Mapping[str, ColumnElement[Any]] = {
    "cases_filed": func.count(),
    "cases_open": count_if(~CASE_CLOSED),
    "cases_closed": count_if(CASE_CLOSED),
}
STAGE_MEASURES: Mapping[str, ColumnElement[Any]] = {s: count_if(c.stage == s) for s in STAGE_RANKS}
RECONSIDERATION_MEASURES: Mapping[str, ColumnElement[Any]] = {
    "decided": func.count(),
    "reconsiderations": count_if(c.reconsideration_filed_at.is_not(None)),
    "revoked_or_changed": count_if(
        and_(c.reconsideration_filed_at.is_not(None), c.reconsideration_result.in_(REVOKED_OR_CHANGED))
    ),
}


# --- clocks --------------------------------------------------------------------------------------

k = clocks.c
# Open: started, and not stopped since its (re)start. stopped < max(started, reset) spelled without
# a dialect's GREATEST.
CLOCK_OPEN = or_(
    k.stopped_at.is_(None),
    k.stopped_at < k.started_at,
    and_(k.reset_at.is_not(None), k.stopped_at < k.reset_at),
)
# Paused in the current cycle and not resumed since: its deadline is not running.
CLOCK_PAUSED = and_(
    k.paused_at.is_not(None),
    k.paused_at >= k.started_at,
    or_(k.reset_at.is_(None), k.paused_at >= k.reset_at),
    or_(k.resumed_at.is_(None), k.resumed_at < k.paused_at),
)
# Only clocks with a deadline count; the stored deadline already holds extensions (extended_to).
CLOCK_COUNTED = and_(k.started_at.is_not(None), k.deadline.is_not(None))
# A clock started by an event that names no township (a transfer's acceptance) takes its matter's
# or its case's.
_clock_matter, _clock_case = matters.alias("clock_matter"), cases.alias("clock_case")
CLOCK_TOWNSHIP = func.coalesce(k.township, _clock_matter.c.township, _clock_case.c.township)
CLOCKS_WITH_TOWNSHIP = clocks.outerjoin(
    _clock_matter, and_(_clock_matter.c.area == k.area, _clock_matter.c.subject_id == k.subject)
).outerjoin(_clock_case, and_(k.area == "case", _clock_case.c.case_id == k.subject))


def clock_rule_filter() -> ColumnElement[bool]:
    return k.rule_id.in_((*duty_rules(), *check_rules()))


def overdue_clock(now: datetime) -> ColumnElement[bool]:
    """A duty clock still open past its deadline, and not paused."""
    return and_(k.rule_id.in_(duty_rules()), CLOCK_COUNTED, CLOCK_OPEN, ~CLOCK_PAUSED, k.deadline < now)


def clock_measures(now: datetime) -> Mapping[str, ColumnElement[Any]]:
    duty, check = k.rule_id.in_(duty_rules()), k.rule_id.in_(check_rules())
    stopped = and_(duty, ~CLOCK_OPEN)
    on_time = or_(and_(stopped, k.stopped_at <= k.deadline), and_(check, k.started_at <= k.deadline))
    late = or_(and_(stopped, k.stopped_at > k.deadline), and_(check, k.started_at > k.deadline))
    return {
        "closed": count_if(or_(stopped, check)),
        "on_time": count_if(on_time),
        "late": count_if(late),
        "open": count_if(and_(duty, CLOCK_OPEN)),
        "open_overdue": count_if(and_(duty, CLOCK_OPEN, ~CLOCK_PAUSED, k.deadline < now)),
    }


def with_on_time_rate(counts: Mapping[str, Any]) -> dict[str, Any]:
    """on_time / (on_time + late + open_overdue): a clock already past its deadline counts as missed."""
    out: dict[str, Any] = {
        n: int(counts.get(n, 0)) for n in ("closed", "on_time", "late", "open", "open_overdue")
    }
    out["on_time_rate"] = rate(out["on_time"], out["on_time"] + out["late"] + out["open_overdue"])
    return out


# --- matters (loops) -----------------------------------------------------------------------------

m = matters.c
MATTER_OPEN = or_(m.closed_at.is_(None), and_(m.reopened_at.is_not(None), m.reopened_at > m.closed_at))


def matter_overdue(now: datetime) -> ColumnElement[bool]:
    return exists(select(literal(1)).where(k.area == m.area, k.subject == m.subject_id, overdue_clock(now)))


def matter_escalated() -> ColumnElement[bool]:
    a = alerts.c
    # IN, not a correlated EXISTS: alerts has no index on its subject, and SQLite runs an IN
    # subquery once instead of once per matter.
    escalated = select(a.about_area, a.about_subject).where(a.withdrawn_at.is_(None), a.level.in_(ESCALATED))
    return tuple_(m.area, m.subject_id).in_(escalated)


def matter_has_unit(unit: str) -> ColumnElement[bool]:
    mp = matter_parties.c
    party = exists(
        select(literal(1)).where(mp.area == m.area, mp.subject_id == m.subject_id, mp.unit_id == unit)
    )
    return or_(m.initiator == unit, party)


def loop_measures(now: datetime) -> Mapping[str, ColumnElement[Any]]:
    return {
        "open": count_if(MATTER_OPEN),
        "overdue": count_if(and_(MATTER_OPEN, matter_overdue(now))),
        "escalated": count_if(and_(MATTER_OPEN, matter_escalated())),
        "closed": count_if(~MATTER_OPEN),
    }


# --- officers ------------------------------------------------------------------------------------


async def officers(conn: AsyncConnection) -> tuple[dict[str, int], dict[str, int]]:
    """Officers of the projected directory's units that are not retired, by home township and by unit."""
    d = directory_units.c
    by_township: dict[str, int] = {}
    by_unit: dict[str, int] = {}
    rows = await conn.execute(
        select(d.unit_id, d.home_township, d.officers).where(d.retired_at.is_(None), d.officers.is_not(None))
    )
    for row in rows:
        by_unit[row.unit_id] = int(row.officers)
        if row.home_township:
            by_township[row.home_township] = by_township.get(row.home_township, 0) + int(row.officers)
    return by_township, by_unit


def json_list(text: str | None) -> list[str]:
    value = json.loads(text) if text else []
    return [str(v) for v in value] if isinstance(value, list) else []
