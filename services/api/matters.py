"""Coordination matters, anomalies and the projected directory."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy import Row, and_, or_, select

from projections.schema import anomalies, directory_units, matter_parties, matters
from services.api.context import Ctx
from services.api.problems import problem, unknown_township
from services.api.render import iso as _iso
from services.api.render import timeline

router = APIRouter()


def _matter_json(row: Row[Any]) -> dict[str, Any]:
    out = dict(row._mapping)
    for name in ("opened_at", "closed_at", "reopened_at", "last_event_at"):
        out[name] = _iso(out[name])
    closed, reopened = row.closed_at, row.reopened_at
    out["open"] = closed is None or (reopened is not None and reopened > closed)
    return out


@router.get("/v1/matters/{area}/{subject_id}")
async def get_matter(area: str, subject_id: str, ctx: Ctx) -> JSONResponse:
    m = matters.c
    async with ctx.engine.connect() as conn:
        row = (await conn.execute(select(matters).where(m.area == area, m.subject_id == subject_id))).first()
        if row is None:
            return problem(404, "not_found", f"No {area} matter {subject_id}", f"未找到事项 {subject_id}")
        body = _matter_json(row)
        parties = await conn.execute(
            select(matter_parties.c.unit_id)
            .where(matter_parties.c.area == area, matter_parties.c.subject_id == subject_id)
            .order_by(matter_parties.c.unit_id)
        )
        body["parties"] = list(parties.scalars())
        body["events"] = await timeline(conn, area, subject_id)
    return JSONResponse(body)


@router.get("/v1/matters")
async def list_matters(
    ctx: Ctx,
    area: Annotated[str | None, Query(description="Mechanism, e.g. transfer")] = None,
    township: Annotated[str | None, Query()] = None,
    unit: Annotated[str | None, Query(description="Only matters this unit takes part in")] = None,
    open: Annotated[bool | None, Query(description="true: open loops only; false: closed only")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(description="Return matters after this subject id")] = None,
) -> JSONResponse:
    if township is not None and township not in ctx.directory.townships:
        return unknown_township(township)
    m = matters.c
    query = select(matters).order_by(m.subject_id, m.area).limit(limit + 1)
    if area is not None:
        query = query.where(m.area == area)
    if township is not None:
        query = query.where(m.township == township)
    if unit is not None:
        mp = matter_parties.c
        query = query.where(
            select(mp.unit_id)
            .where(mp.subject_id == m.subject_id, mp.area == m.area, mp.unit_id == unit)
            .exists()
        )
    is_open = or_(m.closed_at.is_(None), and_(m.reopened_at.is_not(None), m.reopened_at > m.closed_at))
    if open is not None:
        query = query.where(is_open if open else ~is_open)
    if after is not None:
        query = query.where(m.subject_id > after)
    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    items = [_matter_json(r) for r in rows[:limit]]
    return JSONResponse(
        {"items": items, "next_after": items[-1]["subject_id"] if len(rows) > limit else None}
    )


@router.get("/v1/anomalies")
async def list_anomalies(
    ctx: Ctx,
    category: Annotated[str | None, Query(description="data_quality or three_systems")] = None,
    subject: Annotated[str | None, Query()] = None,
    open: Annotated[bool | None, Query()] = True,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(description="Return anomalies after this anomaly id")] = None,
) -> JSONResponse:
    a = anomalies.c
    query = select(anomalies).order_by(a.anomaly_id).limit(limit + 1)
    if category is not None:
        query = query.where(a.category == category)
    if subject is not None:
        query = query.where(a.subject == subject)
    if open is not None:
        query = query.where(a.resolved_at.is_(None) if open else a.resolved_at.is_not(None))
    if after is not None:
        query = query.where(a.anomaly_id > after)
    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    items = []
    for row in rows[:limit]:
        item = dict(row._mapping)
        for name in ("occurred_at", "detected_at", "resolved_at"):
            item[name] = _iso(item[name])
        items.append(item)
    return JSONResponse(
        {"items": items, "next_after": items[-1]["anomaly_id"] if len(rows) > limit else None}
    )


@router.get("/v1/directory/units")
async def list_units(ctx: Ctx) -> JSONResponse:
    """The directory as projected from `directory.*` events (what every consumer of the hub sees)."""
    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(select(directory_units).order_by(directory_units.c.unit_id))).all()
    items = []
    for row in rows:
        item = dict(row._mapping)
        item["jurisdiction"] = json.loads(item["jurisdiction"] or "[]")
        item["publishes"] = json.loads(item["publishes"] or "[]")
        item["retired_at"] = _iso(item["retired_at"])
        item["changed_at"] = _iso(item["changed_at"])
        items.append(item)
    return JSONResponse({"items": items})
