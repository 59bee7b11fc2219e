"""The case registry's query API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy import Row, select

from connectors.http_gateway.ingest import FieldProblem
from projections.case_registry import STAGE_RANKS
from projections.schema import anomalies, cases, clocks, matters
from services.api.context import Ctx
from services.api.problems import problem, unknown_township
from services.api.render import clock_json, timeline
from services.api.render import iso as _iso

router = APIRouter()

STAGES = tuple(STAGE_RANKS)
_CASE_COLUMNS = [c for c in cases.c if c.name != "stage_rank"]


def _case_json(row: Row[Any]) -> dict[str, Any]:
    out = dict(row._mapping)
    for name in ("filed_at", "decided_at", "closed_at", "last_event_at"):
        out[name] = _iso(out[name])
    return out


@router.get("/v1/cases/{case_id}")
async def get_case(case_id: str, ctx: Ctx) -> JSONResponse:
    async with ctx.engine.connect() as conn:
        row = (await conn.execute(select(*_CASE_COLUMNS).where(cases.c.case_id == case_id))).first()
        if row is None:
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
    return JSONResponse(body)


@router.get("/v1/cases")
async def list_cases(
    ctx: Ctx,
    township: Annotated[str | None, Query(description="Township code, e.g. shilou")] = None,
    stage: Annotated[str | None, Query(description="filed, decided or closed")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(description="Return cases after this case id")] = None,
) -> JSONResponse:
    if township is not None and township not in ctx.directory.townships:
        return unknown_township(township)
    if stage is not None and stage not in STAGES:
        return problem(
            400,
            "invalid_query",
            "Unknown stage",
            "未知阶段",
            [FieldProblem("stage", f"must be one of {', '.join(STAGES)}")],
        )
    query = select(*_CASE_COLUMNS).order_by(cases.c.case_id).limit(limit + 1)
    if township is not None:
        query = query.where(cases.c.township == township)
    if stage is not None:
        query = query.where(cases.c.stage == stage)
    if after is not None:
        query = query.where(cases.c.case_id > after)
    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    items = [_case_json(r) for r in rows[:limit]]
    next_after = items[-1]["case_id"] if len(rows) > limit else None
    return JSONResponse({"items": items, "next_after": next_after})
