"""分析研判 over time: cases filed, decided and closed per month or ISO week, in China time.

The periods' boundaries (China-time midnights, as UTC instants) are computed here and the database
counts each timestamp into its period by comparisons only, so PostgreSQL and SQLite, whose date
functions differ, give the same buckets, and no timestamp crosses into Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import ColumnElement, Integer, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from projections.schema import cases
from services.api.access import ScopeDep
from services.api.context import Ctx
from services.api.export import Column, respond
from services.api.listing import CST, LIST_RESPONSES, Category, PageDep, Period, PeriodDep, UnitDep
from services.api.models import Listing, TrendRow

router = APIRouter()
TREND_COLUMNS = (
    Column("period", "期间", "Period"),
    Column("cases_filed", "立案数", "Cases filed"),
    Column("cases_decided", "作出决定数", "Cases decided"),
    Column("cases_closed", "结案数", "Cases closed"),
)
_MEASURES = (
    ("cases_filed", cases.c.filed_at),
    ("cases_decided", cases.c.decided_at),
    ("cases_closed", cases.c.closed_at),
)


def _local_day(moment: datetime) -> date:
    # SQLite hands stored times back without their zone; every stored time is UTC.
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(CST).date()


def bucket(day: date, period: str) -> str:
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


def _starts(first: date, last: date, period: str) -> list[date]:
    """The first day of every period from the one holding `first` to the one holding `last`."""
    out: list[date] = []
    if period == "week":
        day = first - timedelta(days=first.weekday())
        while day <= last:
            out.append(day)
            day += timedelta(days=7)
        return out
    day = first.replace(day=1)
    while day <= last:
        out.append(day)
        day = date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)
    return out


def buckets(first: date, last: date, period: str) -> list[str]:
    """Every period from the one holding `first` to the one holding `last`, oldest first."""
    return [bucket(day, period) for day in _starts(first, last, period)]


def period_index(column: Any, bounds: Sequence[datetime], base: int = 0) -> ColumnElement[int]:
    """base + the number of `bounds` (ascending) at or before `column`: its period's index when the
    bounds are the periods' starts after the first. A balanced tree of CASEs, so each row costs
    log2(periods) comparisons, and the indexes are inlined literals, which both dialects type."""
    if not bounds:
        return literal_column(str(base), Integer)
    mid = len(bounds) // 2
    return case(
        (column < bounds[mid], period_index(column, bounds[:mid], base)),
        else_=period_index(column, bounds[mid + 1 :], base + mid + 1),
    )


def _instant(day: date) -> datetime:
    # UTC, like the period's bounds: SQLite compares the stored UTC text.
    return datetime.combine(day, time(0), CST).astimezone(UTC)


async def _extent(
    conn: AsyncConnection, where: Sequence[ColumnElement[bool]], span: Period
) -> tuple[date | None, date | None]:
    """The first and last China-time day of any counted timestamp: the trend's extent where the
    period leaves it open."""
    days: list[date] = []
    for _, column in _MEASURES:
        row = (
            await conn.execute(
                select(func.min(column), func.max(column)).where(
                    column.is_not(None), *where, *span.where(column)
                )
            )
        ).one()
        days.extend(_local_day(x) for x in row if x is not None)
    return (min(days), max(days)) if days else (None, None)


@router.get("/v1/analysis/trend", response_model=Listing[TrendRow], responses=LIST_RESPONSES)
async def trend(
    ctx: Ctx,
    scope: ScopeDep,
    span: PeriodDep,
    page: PageDep,
    unit: UnitDep,
    category: Category = None,
    period: Annotated[
        Literal["month", "week"], Query(description="month ('2022-03') or ISO week ('2022-W09'), China time")
    ] = "month",
) -> Response:
    """Cases filed, decided and closed per period, oldest first, each counted at its own time.
    Periods without cases are listed with zeros between the first and the last."""
    c = cases.c
    where = [*scope.where(c.township)]
    if unit is not None:
        where.append(c.handling_unit == unit)
    if category is not None:
        where.append(c.category == category)
    first = _local_day(span.start) if span.start else None
    last = _local_day(span.end) - timedelta(days=1) if span.end else None
    async with ctx.engine.connect() as conn:
        if first is None or last is None:
            low, high = await _extent(conn, where, span)
            first, last = first or low, last or high
        if first is None or last is None or last < first:
            rows: list[dict[str, Any]] = []
        else:
            starts = _starts(first, last, period)
            rows = [{"period": bucket(day, period), **dict.fromkeys(dict(_MEASURES), 0)} for day in starts]
            bounds = [_instant(day) for day in starts[1:]]
            for name, column in _MEASURES:
                # Grouped over a subquery: a GROUP BY repeating the CASE would bind its bounds
                # again, and PostgreSQL would not see the two expressions as the same.
                counted = (
                    select(period_index(column, bounds).label("i"))
                    .where(column.is_not(None), *where, *span.where(column))
                    .subquery()
                )
                for i, n in await conn.execute(select(counted.c.i, func.count()).group_by(counted.c.i)):
                    rows[i][name] = int(n)
    return await respond(
        page.format,
        "trend",
        TREND_COLUMNS,
        page.slice(rows),
        total=len(rows),
        limit=page.limit,
        offset=page.offset,
    )
