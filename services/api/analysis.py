"""分析研判: the district overview with its ranking, and the load per officer.

Figures per group (stages, on-time, loops, reconsiderations, file reviews) are in `breakdowns.py`,
figures over time in `trend.py`.
Every figure is defined in docs/query-api.md; all of them read only the viewer's townships.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import func

from projections.schema import anomalies, cases, clocks, matters
from services.api.access import Scope, ScopeDep
from services.api.context import ApiContext, Ctx
from services.api.export import Column, respond
from services.api.figures import (
    CASE_MEASURES,
    CLOCK_COUNTED,
    CLOCK_TOWNSHIP,
    CLOCKS_WITH_TOWNSHIP,
    REFERENCE_CASES_PER_OFFICER,
    Counts,
    Group,
    clock_measures,
    clock_rule_filter,
    grouped,
    loop_measures,
    officers,
    rate,
    with_on_time_rate,
)
from services.api.labels import name_zh
from services.api.listing import LIST_RESPONSES, Category, PageDep, PeriodDep
from services.api.models import LoadListing, OverviewListing
from services.timesource import time_source

router = APIRouter()
REFERENCE = {"cases_per_officer": REFERENCE_CASES_PER_OFFICER}
OVERVIEW_COUNTS = (
    "cases_filed",
    "cases_open",
    "cases_closed",
    "officers",
    "clocks_on_time",
    "clocks_late",
    "clocks_open_overdue",
    "loops_open",
    "loops_overdue",
    "loops_escalated",
    "anomalies_open",
)
OVERVIEW_COLUMNS = (
    Column("rank", "排名", "Rank"),
    Column("township", "镇街代码", "Township code"),
    Column("name_zh", "镇街", "Township"),
    Column("cases_filed", "立案数", "Cases filed"),
    Column("cases_open", "在办案件", "Cases open"),
    Column("cases_closed", "已结案件", "Cases closed"),
    Column("officers", "执法人员", "Officers"),
    Column("cases_per_officer", "人均办案量", "Cases per officer"),
    Column("on_time_rate", "按时办结率", "On-time rate"),
    Column("loops_open", "未闭环事项", "Open loops"),
    Column("loops_overdue", "逾期事项", "Overdue loops"),
    Column("loops_escalated", "已升级督办", "Escalated loops"),
    Column("anomalies_open", "未处理异常", "Open anomalies"),
)
LOAD_COLUMNS = (
    Column("group", "分组", "Group"),
    Column("name_zh", "名称", "Name"),
    Column("cases_filed", "立案数", "Cases filed"),
    Column("officers", "执法人员", "Officers"),
    Column("cases_per_officer", "人均办案量", "Cases per officer"),
)


def now(ctx: ApiContext) -> datetime:
    return time_source(ctx.settings.time_source)()


def group_keys(ctx: ApiContext, scope: Scope, group_by: str, *counts: Counts) -> list[Group]:
    """Rows to show: every township in scope when grouping by township (zeros included), else the
    groups that have data; a code the directory does not know comes last."""
    seen: set[Group] = {g for found in counts for g in found}
    listed: list[Group] = []
    if group_by == "township":
        listed = [t for t in ctx.directory.townships if t in scope.townships]
    rest = sorted((g for g in seen if g not in listed), key=lambda g: (g is None, g or ""))
    return listed + rest


def _rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ordered = sorted(
        rows,
        key=lambda r: (
            r["on_time_rate"] is None,
            -(r["on_time_rate"] or 0),
            r["loops_overdue"],
            r["township"] or "",
        ),
    )
    for i, row in enumerate(ordered, 1):
        row["rank"] = i
    return ordered


def _overview_figures(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {n: int(values.get(n, 0)) for n in OVERVIEW_COUNTS}
    out["cases_per_officer"] = rate(out["cases_filed"], out["officers"], 2)
    due = out["clocks_on_time"] + out["clocks_late"] + out["clocks_open_overdue"]
    out["on_time_rate"] = rate(out["clocks_on_time"], due)
    return out


@router.get("/v1/analysis/overview", response_model=OverviewListing, responses=LIST_RESPONSES)
async def overview(ctx: Ctx, scope: ScopeDep, span: PeriodDep, page: PageDep) -> Response:
    """One row per township in scope, ranked. from/to select cases by filing time and clocks by
    deadline; loops and anomalies are as of now."""
    c, k, m, a = cases.c, clocks.c, matters.c, anomalies.c
    moment = now(ctx)
    async with ctx.engine.connect() as conn:
        filed = await grouped(
            conn,
            c.township,
            CASE_MEASURES,
            [c.filed_at.is_not(None), *scope.where(c.township), *span.where(c.filed_at)],
        )
        timed = await grouped(
            conn,
            CLOCK_TOWNSHIP,
            clock_measures(moment),
            [CLOCK_COUNTED, clock_rule_filter(), *scope.where(CLOCK_TOWNSHIP), *span.where(k.deadline)],
            CLOCKS_WITH_TOWNSHIP,
        )
        loops = await grouped(conn, m.township, loop_measures(moment), scope.where(m.township))
        flagged = await grouped(
            conn,
            a.township,
            {"anomalies_open": func.count()},
            [a.resolved_at.is_(None), *scope.where(a.township)],
        )
        by_township, _ = await officers(conn)
    rows = []
    # One row per township in scope: rows that name no township have no place in a ranking.
    for key in group_keys(ctx, scope, "township"):
        clock = with_on_time_rate(timed.get(key, {}))
        loop = loops.get(key, {})
        values = {
            **filed.get(key, {}),
            "officers": by_township.get(key, 0) if key else 0,
            "clocks_on_time": clock["on_time"],
            "clocks_late": clock["late"],
            "clocks_open_overdue": clock["open_overdue"],
            "loops_open": loop.get("open", 0),
            "loops_overdue": loop.get("overdue", 0),
            "loops_escalated": loop.get("escalated", 0),
            **flagged.get(key, {}),
        }
        rows.append(
            {"township": key, "name_zh": name_zh(ctx.directory, "township", key), **_overview_figures(values)}
        )
    totals = _overview_figures({n: sum(r[n] for r in rows) for n in OVERVIEW_COUNTS})
    ranked = _rank(rows)
    return await respond(
        page.format,
        "overview",
        OVERVIEW_COLUMNS,
        page.slice(ranked),
        total=len(ranked),
        limit=page.limit,
        offset=page.offset,
        extra={"totals": totals, "reference": REFERENCE},
    )


@router.get("/v1/analysis/load", response_model=LoadListing, responses=LIST_RESPONSES)
async def load(
    ctx: Ctx,
    scope: ScopeDep,
    span: PeriodDep,
    page: PageDep,
    category: Category = None,
    group_by: Annotated[Literal["township", "unit"], Query(description="township or unit")] = "township",
) -> Response:
    """Cases filed (from/to: filing time) per officer of the directory's units that are not retired:
    a township's units are those whose home it is; a unit's cases are those it handles."""
    c = cases.c
    key = c.township if group_by == "township" else c.handling_unit
    where = [c.filed_at.is_not(None), *scope.where(c.township), *span.where(c.filed_at)]
    if category is not None:
        where.append(c.category == category)
    async with ctx.engine.connect() as conn:
        filed = await grouped(conn, key, {"cases_filed": func.count()}, where)
        by_township, by_unit = await officers(conn)
    if group_by == "township":
        staff: dict[Group, int] = {t: n for t, n in by_township.items() if scope.allows(t)}
    else:
        staff = {
            u: n
            for u, n in by_unit.items()
            if scope.allows(ctx.directory.units[u].home_township if u in ctx.directory.units else None)
        }
    keys = group_keys(ctx, scope, group_by, filed, {g: {} for g in staff})
    rows: list[dict[str, Any]] = [
        {
            "group": g,
            "name_zh": name_zh(ctx.directory, group_by, g),
            "cases_filed": int(filed.get(g, {}).get("cases_filed", 0)),
            "officers": staff.get(g, 0),
        }
        for g in keys
    ]
    for row in rows:
        row["cases_per_officer"] = rate(row["cases_filed"], row["officers"], 2)
    all_filed, all_staff = sum(r["cases_filed"] for r in rows), sum(r["officers"] for r in rows)
    totals = {
        "group": None,
        "name_zh": "合计",
        "cases_filed": all_filed,
        "officers": all_staff,
        "cases_per_officer": rate(all_filed, all_staff, 2),
    }
    return await respond(
        page.format,
        f"load-by-{group_by}",
        LOAD_COLUMNS,
        page.slice(rows),
        total=len(rows),
        limit=page.limit,
        offset=page.offset,
        extra={"totals": totals, "reference": REFERENCE},
    )
