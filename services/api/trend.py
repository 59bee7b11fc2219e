"""分析研判 over time: cases filed, decided and closed per month or ISO week, in China time.

Periods are counted in Python over the matching timestamps, so that PostgreSQL and SQLite, whose
date functions differ, give the same buckets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import select

from projections.schema import cases
from services.api.access import ScopeDep
from services.api.context import Ctx
from services.api.export import Column, respond
from services.api.listing import CST, LIST_RESPONSES, Category, PageDep, PeriodDep, UnitDep
from services.api.models import Listing, TrendRow

router = APIRouter()
TREND_COLUMNS = (
    Column("period", "期间", "Period"),
    Column("cases_filed", "立案数", "Cases filed"),
    Column("cases_decided", "作出决定数", "Cases decided"),
    Column("cases_closed", "结案数", "Cases closed"),
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


def buckets(first: date, last: date, period: str) -> list[str]:
    """Every period from the one holding `first` to the one holding `last`, oldest first."""
    out: list[str] = []
    if period == "week":
        day = first - timedelta(days=first.weekday())
        while day <= last:
            out.append(bucket(day, period))
            day += timedelta(days=7)
        return out
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        out.append(f"{year}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _trend_rows(
    found: Mapping[str, Iterable[date]], first: date | None, last: date | None, period: str
) -> list[dict[str, Any]]:
    days = {name: list(values) for name, values in found.items()}
    every = [d for values in days.values() for d in values]
    first = first or (min(every) if every else None)
    last = last or (max(every) if every else None)
    if first is None or last is None or last < first:
        return []
    rows: dict[str, dict[str, Any]] = {
        b: {"period": b, **dict.fromkeys(days, 0)} for b in buckets(first, last, period)
    }
    for name, values in days.items():
        for d in values:
            if (b := bucket(d, period)) in rows:
                rows[b][name] += 1
    return list(rows.values())


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
    found: dict[str, Sequence[date]] = {}
    async with ctx.engine.connect() as conn:
        for name, column in (
            ("cases_filed", c.filed_at),
            ("cases_decided", c.decided_at),
            ("cases_closed", c.closed_at),
        ):
            moments = await conn.scalars(
                select(column).where(column.is_not(None), *where, *span.where(column))
            )
            found[name] = [_local_day(x) for x in moments]
    first = _local_day(span.start) if span.start else None
    last = _local_day(span.end) - timedelta(days=1) if span.end else None
    rows = _trend_rows(found, first, last, period)
    return await respond(
        page.format,
        "trend",
        TREND_COLUMNS,
        page.slice(rows),
        total=len(rows),
        limit=page.limit,
        offset=page.offset,
    )
