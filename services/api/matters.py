"""Coordination matters and the projected directory, for viewers with a key."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Row, select

from projections.schema import directory_units, matter_parties, matters
from services.api.access import ScopeDep, ViewerDep
from services.api.context import Ctx
from services.api.export import Column, respond
from services.api.figures import MATTER_OPEN, matter_has_unit
from services.api.listing import LIST_RESPONSES, PROBLEMS, PageDep, PeriodDep, UnitDep, fetch
from services.api.models import Listing, MatterDetail, MatterListing, ProblemModel, UnitItem
from services.api.problems import problem
from services.api.render import iso as _iso
from services.api.render import timeline

router = APIRouter()

COLUMNS = (
    Column("area", "机制", "Mechanism"),
    Column("subject_id", "事项编号", "Matter id"),
    Column("township", "镇街", "Township"),
    Column("case_id", "关联案件", "Case"),
    Column("initiator", "发起单位", "Initiator"),
    Column("opened_at", "发起时间", "Opened at"),
    Column("closed_at", "办结时间", "Closed at"),
    Column("reopened_at", "重新打开时间", "Reopened at"),
    Column("last_event_type", "最近事件", "Last event"),
    Column("last_event_at", "最近事件时间", "Last event at"),
    Column("open", "未办结", "Open"),
)
UNIT_COLUMNS = (
    Column("unit_id", "单位代码", "Unit id"),
    Column("kind", "类型", "Kind"),
    Column("name_zh", "单位名称", "Name"),
    Column("name_en", "英文名", "English name"),
    Column("home_township", "所在镇街", "Home township"),
    Column("jurisdiction", "管辖镇街", "Jurisdiction"),
    Column("officers", "执法人员数", "Officers"),
    Column("retired_at", "撤销时间", "Retired at"),
)


def _matter_json(row: Row[Any]) -> dict[str, Any]:
    out = dict(row._mapping)
    for name in ("opened_at", "closed_at", "reopened_at", "last_event_at"):
        out[name] = _iso(out[name])
    closed, reopened = row.closed_at, row.reopened_at
    out["open"] = closed is None or (reopened is not None and reopened > closed)
    return out


@router.get(
    "/v1/matters/{area}/{subject_id}",
    response_model=MatterDetail,
    responses={**PROBLEMS, 404: {"model": ProblemModel, "description": "No such matter in your scope"}},
)
async def get_matter(
    area: Annotated[str, Path(description="Mechanism, e.g. transfer")],
    subject_id: Annotated[str, Path(description="Id of the matter within its mechanism")],
    ctx: Ctx,
    viewer: ViewerDep,
) -> JSONResponse:
    m = matters.c
    async with ctx.engine.connect() as conn:
        row = (await conn.execute(select(matters).where(m.area == area, m.subject_id == subject_id))).first()
        if row is None or not viewer.sees(row.township):
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


@router.get("/v1/matters", response_model=MatterListing, responses=LIST_RESPONSES)
async def list_matters(
    ctx: Ctx,
    scope: ScopeDep,
    page: PageDep,
    period: PeriodDep,
    unit: UnitDep,
    area: Annotated[str | None, Query(description="Mechanism, e.g. transfer")] = None,
    open: Annotated[bool | None, Query(description="true: open loops only; false: closed only")] = None,
    after: Annotated[
        str | None, Query(description="Keyset paging: only matters after this subject id")
    ] = None,
) -> Response:
    """Matters in the viewer's townships. `unit`: the initiator or a party; from/to: the opening time."""
    m = matters.c
    query = select(matters).where(*scope.where(m.township), *period.where(m.opened_at))
    if area is not None:
        query = query.where(m.area == area)
    if unit is not None:
        query = query.where(matter_has_unit(unit))
    if open is not None:
        query = query.where(MATTER_OPEN if open else ~MATTER_OPEN)
    if after is not None:
        query = query.where(m.subject_id > after)
    async with ctx.engine.connect() as conn:
        rows, total = await fetch(conn, query.order_by(m.subject_id, m.area), page)
    items = [_matter_json(r) for r in rows]
    more = not page.export and page.offset + len(items) < total
    extra = {"next_after": items[-1]["subject_id"] if items and more else None}
    return await respond(
        page.format, "matters", COLUMNS, items, total=total, limit=page.limit, offset=page.offset, extra=extra
    )


@router.get("/v1/directory/units", response_model=Listing[UnitItem], responses=LIST_RESPONSES)
async def list_units(
    ctx: Ctx,
    viewer: ViewerDep,
    page: PageDep,
    kind: Annotated[str | None, Query(description="enforcement_office, dispatched_agency, ...")] = None,
) -> Response:
    """The directory as projected from `directory.*` events (what every consumer of the hub sees).
    The same for every viewer: it names units, not cases."""
    d = directory_units.c
    query = select(directory_units)
    if kind is not None:
        query = query.where(d.kind == kind)
    async with ctx.engine.connect() as conn:
        rows, total = await fetch(conn, query.order_by(d.unit_id), page)
    items = []
    for row in rows:
        item = dict(row._mapping)
        item["jurisdiction"] = json.loads(item["jurisdiction"] or "[]")
        item["publishes"] = json.loads(item["publishes"] or "[]")
        item["retired_at"] = _iso(item["retired_at"])
        item["changed_at"] = _iso(item["changed_at"])
        items.append(item)
    return await respond(
        page.format, "units", UNIT_COLUMNS, items, total=total, limit=page.limit, offset=page.offset
    )
