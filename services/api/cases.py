"""The case registry's query API, scoped to the viewer's townships."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Row, select

from connectors.http_gateway.ingest import FieldProblem
from projections.case_registry import STAGE_RANKS
from projections.schema import anomalies, cases, clocks, matters
from services.api.access import ScopeDep, ViewerDep
from services.api.context import Ctx
from services.api.export import Column, respond
from services.api.listing import LIST_RESPONSES, PROBLEMS, Category, PageDep, PeriodDep, UnitDep, fetch
from services.api.models import CaseDetail, CaseListing, ProblemModel
from services.api.pii import entitled, subject_parties
from services.api.problems import problem
from services.api.render import clock_json, timeline
from services.api.render import iso as _iso

router = APIRouter()

STAGES = tuple(STAGE_RANKS)
_CASE_COLUMNS = [c for c in cases.c if c.name != "stage_rank"]
COLUMNS = (
    Column("case_id", "案件编号", "Case id"),
    Column("case_number", "立案文号", "Case number"),
    Column("township", "镇街", "Township"),
    Column("category", "案件类别", "Category"),
    Column("handling_unit", "办案单位", "Handling unit"),
    Column("title", "案由", "Title"),
    Column("stage", "阶段", "Stage"),
    Column("outcome", "处理结果", "Outcome"),
    Column("fine_amount_fen", "罚款（分）", "Fine (fen)"),
    Column("filed_at", "立案时间", "Filed at"),
    Column("decided_at", "决定时间", "Decided at"),
    Column("closed_at", "结案时间", "Closed at"),
    Column("reconsideration_filed_at", "复议申请时间", "Reconsideration filed at"),
    Column("reconsideration_result", "复议结果", "Reconsideration result"),
    Column("last_event_at", "最近事件时间", "Last event at"),
)


def _case_json(row: Row[Any]) -> dict[str, Any]:
    out = dict(row._mapping)
    for name in ("filed_at", "decided_at", "closed_at", "last_event_at", "reconsideration_filed_at"):
        out[name] = _iso(out[name])
    return out


@router.get(
    "/v1/cases/{case_id}",
    response_model=CaseDetail,
    responses={**PROBLEMS, 404: {"model": ProblemModel, "description": "No such case in your scope"}},
)
async def get_case(
    case_id: Annotated[str, Path(description="Case id, as its unit publishes it")],
    ctx: Ctx,
    viewer: ViewerDep,
) -> JSONResponse:
    """A case with its full-process record, clocks, linked mechanisms and anomalies."""
    async with ctx.engine.connect() as conn:
        row = (await conn.execute(select(*_CASE_COLUMNS).where(cases.c.case_id == case_id))).first()
        # Outside the viewer's townships a case does not exist for them: 404, not 403, so ids leak nothing.
        if row is None or not viewer.sees(row.township):
            return problem(404, "not_found", f"No case {case_id}", f"未找到案件 {case_id}")
        body = _case_json(row)
        body["events"] = await timeline(conn, "case", case_id)
        a = anomalies.c
        flagged = await conn.execute(
            select(a.anomaly_id, a.kind, a.category, a.event_id, a.detail, a.resolved_at)
            .where(a.area == "case", a.subject == case_id)
            .order_by(a.occurred_at)
        )
        body["anomalies"] = [
            {
                "id": x.anomaly_id,
                "kind": x.kind,
                "category": x.category,
                "event_id": x.event_id,
                "detail": x.detail,
                "open": x.resolved_at is None,
            }
            for x in flagged
        ]
        linked = await conn.execute(
            select(matters.c.area, matters.c.subject_id)
            .where(matters.c.case_id == case_id)
            .order_by(matters.c.opened_at)
        )
        body["matters"] = [{"area": m.area, "id": m.subject_id} for m in linked]
        case_clocks = await conn.execute(
            select(clocks)
            # A clock known only from its stop event has not started: nothing to show yet.
            .where(clocks.c.area == "case", clocks.c.subject == case_id, clocks.c.started_at.is_not(None))
            .order_by(clocks.c.deadline)
        )
        body["clocks"] = [clock_json(row) for row in case_clocks]
        clear = entitled(viewer, row.township, row.handling_unit)
        body["parties"] = await subject_parties(conn, "case", case_id, ctx.settings.master_key, clear)
    return JSONResponse(body)


@router.get("/v1/cases", response_model=CaseListing, responses=LIST_RESPONSES)
async def list_cases(
    ctx: Ctx,
    scope: ScopeDep,
    page: PageDep,
    period: PeriodDep,
    unit: UnitDep,
    category: Category = None,
    stage: Annotated[str | None, Query(description=f"One of {', '.join(STAGES)}")] = None,
    after: Annotated[str | None, Query(description="Keyset paging: only cases after this case id")] = None,
) -> Response:
    """Cases in the viewer's townships, by case id. `unit` is the handling unit; from/to select the
    filing time."""
    if stage is not None and stage not in STAGES:
        return problem(
            400,
            "invalid_query",
            "Unknown stage",
            "未知阶段",
            [FieldProblem("stage", f"must be one of {', '.join(STAGES)}")],
        )
    c = cases.c
    query = select(*_CASE_COLUMNS).where(*scope.where(c.township), *period.where(c.filed_at))
    if unit is not None:
        query = query.where(c.handling_unit == unit)
    if category is not None:
        query = query.where(c.category == category)
    if stage is not None:
        query = query.where(c.stage == stage)
    if after is not None:
        query = query.where(c.case_id > after)
    async with ctx.engine.connect() as conn:
        rows, total = await fetch(conn, query.order_by(c.case_id), page)
    if page.export:
        # The rows become items in the export's worker thread, off the event loop.
        return await respond(
            page.format,
            "cases",
            COLUMNS,
            rows,
            total=total,
            limit=page.limit,
            offset=page.offset,
            convert=_case_json,
        )
    items = [_case_json(r) for r in rows]
    more = not page.export and page.offset + len(items) < total
    extra = {"next_after": items[-1]["case_id"] if items and more else None}
    return await respond(
        page.format, "cases", COLUMNS, items, total=total, limit=page.limit, offset=page.offset, extra=extra
    )
