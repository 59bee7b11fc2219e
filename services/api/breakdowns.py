"""分析研判 by group: cases by stage, on-time rate per clock, loops per mechanism, reconsiderations
and case-file review scores. Definitions in docs/query-api.md."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import ColumnElement, func

from projections.case_registry import STAGE_RANKS
from projections.schema import cases, clocks, file_reviews, matters
from services.api.access import Scope, ScopeDep
from services.api.analysis import group_keys, now
from services.api.context import ApiContext, Ctx
from services.api.export import Column, respond
from services.api.figures import (
    CLOCK_COUNTED,
    CLOCK_TOWNSHIP,
    CLOCKS_WITH_TOWNSHIP,
    RECONSIDERATION_MEASURES,
    STAGE_MEASURES,
    Counts,
    clock_measures,
    clock_rule_filter,
    count_if,
    grouped,
    loop_measures,
    matter_has_unit,
    rate,
    with_on_time_rate,
)
from services.api.labels import STAGES_ZH, clock_rules, mechanisms, name_zh
from services.api.listing import LIST_RESPONSES, Category, Page, PageDep, PeriodDep, UnitDep, invalid
from services.api.models import FileReviewStatsRow, Listing, LoopRow, OnTimeRow, ReconsiderationRow, StagesRow

router = APIRouter()
CaseGroup = Annotated[
    Literal["township", "unit", "category"], Query(description="township, unit (handling unit) or category")
]
GROUP = Column("group", "分组", "Group")
NAME = Column("name_zh", "名称", "Name")


def _case_key(group_by: str) -> ColumnElement[Any]:
    c = cases.c
    return {"township": c.township, "unit": c.handling_unit, "category": c.category}[group_by]


def _case_filters(unit: str | None, category: str | None) -> list[ColumnElement[bool]]:
    c = cases.c
    out: list[ColumnElement[bool]] = []
    if unit is not None:
        out.append(c.handling_unit == unit)
    if category is not None:
        out.append(c.category == category)
    return out


def _rows(
    ctx: ApiContext, scope: Scope, group_by: str, counts: Counts, names: Sequence[str]
) -> list[dict[str, Any]]:
    return [
        {
            "group": g,
            "name_zh": name_zh(ctx.directory, group_by, g),
            **{n: int(counts.get(g, {}).get(n, 0)) for n in names},
        }
        for g in group_keys(ctx, scope, group_by, counts)
    ]


async def _answer(page: Page, name: str, columns: Sequence[Column], rows: list[dict[str, Any]]) -> Response:
    return await respond(
        page.format, name, columns, page.slice(rows), total=len(rows), limit=page.limit, offset=page.offset
    )


STAGE_COLUMNS = (
    GROUP,
    NAME,
    *(Column(s, STAGES_ZH[s], s.replace("_", " ").capitalize()) for s in STAGE_RANKS),
    Column("total", "合计", "Total"),
)


@router.get("/v1/analysis/stages", response_model=Listing[StagesRow], responses=LIST_RESPONSES)
async def stages(
    ctx: Ctx,
    scope: ScopeDep,
    span: PeriodDep,
    page: PageDep,
    unit: UnitDep,
    category: Category = None,
    group_by: CaseGroup = "township",
) -> Response:
    """Cases by their furthest stage now. from/to select by filing time (leads never filed drop out)."""
    c = cases.c
    where = [*scope.where(c.township), *span.where(c.filed_at), *_case_filters(unit, category)]
    async with ctx.engine.connect() as conn:
        counts = await grouped(conn, _case_key(group_by), STAGE_MEASURES, where)
    rows = _rows(ctx, scope, group_by, counts, tuple(STAGE_RANKS))
    for row in rows:
        row["total"] = sum(row[s] for s in STAGE_RANKS)
    return await _answer(page, f"stages-by-{group_by}", STAGE_COLUMNS, rows)


ON_TIME_COLUMNS = (
    GROUP,
    NAME,
    Column("closed", "已办结", "Closed"),
    Column("on_time", "按时", "On time"),
    Column("late", "超时", "Late"),
    Column("open", "在办", "Open"),
    Column("open_overdue", "在办已逾期", "Open, overdue"),
    Column("on_time_rate", "按时率", "On-time rate"),
)


@router.get("/v1/analysis/on-time", response_model=Listing[OnTimeRow], responses=LIST_RESPONSES)
async def on_time(
    ctx: Ctx,
    scope: ScopeDep,
    span: PeriodDep,
    page: PageDep,
    unit: UnitDep,
    rule: Annotated[str | None, Query(description="Only this clock rule, e.g. transfer.acceptance")] = None,
    group_by: Annotated[
        Literal["rule", "township", "unit"],
        Query(description="rule, township or unit (the responsible unit)"),
    ] = "rule",
) -> Response:
    """Duty clocks (stopped by the closing event) and checks (measured at their start); windows and
    notices are not deadlines a unit meets. from/to select clocks by deadline."""
    k = clocks.c
    where = [CLOCK_COUNTED, clock_rule_filter(), *scope.where(CLOCK_TOWNSHIP), *span.where(k.deadline)]
    if unit is not None:
        where.append(k.responsible == unit)
    if rule is not None:
        if rule not in clock_rules().rules:
            raise invalid("rule", f"'{rule}' is not a clock rule")
        where.append(k.rule_id == rule)
    key = {"rule": k.rule_id, "township": CLOCK_TOWNSHIP, "unit": k.responsible}[group_by]
    async with ctx.engine.connect() as conn:
        counts = await grouped(conn, key, clock_measures(now(ctx)), where, CLOCKS_WITH_TOWNSHIP)
    keys = group_keys(ctx, scope, group_by, counts)
    rows = [
        {"group": g, "name_zh": name_zh(ctx.directory, group_by, g), **with_on_time_rate(counts.get(g, {}))}
        for g in keys
    ]
    return await _answer(page, f"on-time-by-{group_by}", ON_TIME_COLUMNS, rows)


LOOP_COLUMNS = (
    Column("area", "机制代码", "Mechanism code"),
    Column("name_zh", "协同机制", "Mechanism"),
    Column("open", "未闭环", "Open"),
    Column("overdue", "逾期", "Overdue"),
    Column("escalated", "已升级", "Escalated"),
    Column("closed", "已闭环", "Closed"),
)


@router.get("/v1/analysis/loops", response_model=Listing[LoopRow], responses=LIST_RESPONSES)
async def loops(ctx: Ctx, scope: ScopeDep, span: PeriodDep, page: PageDep, unit: UnitDep) -> Response:
    """Per mechanism, as of now: open, overdue and escalated loops and closed ones. from/to select
    matters by opening time; `unit` is the initiator or a party."""
    m = matters.c
    where = [*scope.where(m.township), *span.where(m.opened_at)]
    if unit is not None:
        where.append(matter_has_unit(unit))
    async with ctx.engine.connect() as conn:
        counts = await grouped(conn, m.area, loop_measures(now(ctx)), where)
    areas = [a.name for a in mechanisms().areas.values() if a.matter]
    areas += sorted(str(a) for a in counts if a not in areas)
    rows = [
        {
            "area": area,
            "name_zh": name_zh(ctx.directory, "area", area),
            **{n: int(counts.get(area, {}).get(n, 0)) for n in ("open", "overdue", "escalated", "closed")},
        }
        for area in areas
    ]
    return await _answer(page, "loops", LOOP_COLUMNS, rows)


RECONSIDERATION_COLUMNS = (
    GROUP,
    NAME,
    Column("decided", "作出决定", "Decided"),
    Column("reconsiderations", "被申请复议", "Reconsiderations"),
    Column("revoked_or_changed", "被撤销或变更", "Revoked or changed"),
    Column("reconsideration_rate", "复议率", "Reconsideration rate"),
    Column("revoked_or_changed_rate", "撤改率", "Revoked-or-changed rate"),
)


@router.get(
    "/v1/analysis/reconsiderations", response_model=Listing[ReconsiderationRow], responses=LIST_RESPONSES
)
async def reconsiderations(
    ctx: Ctx,
    scope: ScopeDep,
    span: PeriodDep,
    page: PageDep,
    unit: UnitDep,
    category: Category = None,
    group_by: CaseGroup = "township",
) -> Response:
    """Of the cases decided (from/to: decision time), those brought to reconsideration, and of those
    the ones revoked or changed."""
    c = cases.c
    where = [c.decided_at.is_not(None), *scope.where(c.township), *span.where(c.decided_at)]
    where += _case_filters(unit, category)
    async with ctx.engine.connect() as conn:
        counts = await grouped(conn, _case_key(group_by), RECONSIDERATION_MEASURES, where)
    rows = _rows(ctx, scope, group_by, counts, tuple(RECONSIDERATION_MEASURES))
    for row in rows:
        row["reconsideration_rate"] = rate(row["reconsiderations"], row["decided"])
        row["revoked_or_changed_rate"] = rate(row["revoked_or_changed"], row["reconsiderations"])
    return await _answer(page, f"reconsiderations-by-{group_by}", RECONSIDERATION_COLUMNS, rows)


REVIEW_COLUMNS = (
    GROUP,
    NAME,
    Column("reviews", "评查案卷", "Files reviewed"),
    Column("passed", "合格", "Passed"),
    Column("pass_rate", "合格率", "Pass rate"),
    Column("average_score", "平均分", "Average score"),
)


@router.get("/v1/analysis/file-reviews", response_model=Listing[FileReviewStatsRow], responses=LIST_RESPONSES)
async def file_review_scores(
    ctx: Ctx,
    scope: ScopeDep,
    span: PeriodDep,
    page: PageDep,
    unit: UnitDep,
    group_by: Annotated[
        Literal["township", "unit"], Query(description="township or unit (the reviewed unit)")
    ] = "township",
) -> Response:
    """Case-file reviews (案卷评查) scored in from/to: how many, how many passed, the mean score."""
    f = file_reviews.c
    where = [*scope.where(f.township), *span.where(f.scored_at)]
    if unit is not None:
        where.append(f.reviewed_unit == unit)
    measures: Mapping[str, ColumnElement[Any]] = {
        "reviews": func.count(),
        "passed": count_if(f.passed.is_(True)),
        "average_score": func.avg(f.score),
    }
    key = f.township if group_by == "township" else f.reviewed_unit
    async with ctx.engine.connect() as conn:
        counts = await grouped(conn, key, measures, where)
    rows = _rows(ctx, scope, group_by, counts, ("reviews", "passed"))
    for row in rows:
        average = counts.get(row["group"], {}).get("average_score")
        row["pass_rate"] = rate(row["passed"], row["reviews"])
        row["average_score"] = round(float(average), 1) if average is not None else None
    return await _answer(page, f"file-reviews-by-{group_by}", REVIEW_COLUMNS, rows)
