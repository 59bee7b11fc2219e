"""Following loops up: the coordination tracker (every matter, overdue and escalated) and the
anomalies found in the flow of events. Each reads the viewer's townships only."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import Row, and_, case, select, tuple_

from projections.db import pairs_in
from projections.schema import anomalies, clocks, matter_parties, matters
from services.api.access import ScopeDep
from services.api.analysis import now
from services.api.context import Ctx
from services.api.export import Column
from services.api.figures import MATTER_OPEN, matter_escalated, matter_has_unit, overdue_clock
from services.api.labels import name_zh
from services.api.listing import LIST_RESPONSES, PageDep, PeriodDep, UnitDep, fetch
from services.api.models import AnomalyItem, CoordinationItem, Listing
from services.api.registers import answer, item_json

router = APIRouter()


COORDINATION_COLUMNS = (
    Column("area_name_zh", "协同机制", "Mechanism"),
    Column("subject_id", "事项编号", "Matter id"),
    Column("township", "镇街", "Township"),
    Column("initiator", "发起单位", "Initiator"),
    Column("parties", "参与单位", "Parties"),
    Column("opened_at", "发起时间", "Opened at"),
    Column("closed_at", "办结时间", "Closed at"),
    Column("last_event_type", "最近事件", "Last event"),
    Column("overdue", "逾期", "Overdue"),
    Column("escalated", "已升级", "Escalated"),
    Column("status", "状态", "Status"),
)


@router.get("/v1/coordination", response_model=Listing[CoordinationItem], responses=LIST_RESPONSES)
async def coordination(
    ctx: Ctx,
    scope: ScopeDep,
    span: PeriodDep,
    page: PageDep,
    unit: UnitDep,
    area: Annotated[str | None, Query(description="Mechanism, e.g. transfer, assistance")] = None,
    status: Annotated[
        Literal["open", "overdue", "closed"] | None,
        Query(description="open (not closed, overdue included), overdue or closed"),
    ] = None,
) -> Response:
    """The coordination tracker: every matter, whether it is overdue and whether it was escalated.
    `unit`: the initiator or a party; from/to select by opening time."""
    m, k = matters.c, clocks.c
    # The matters with an overdue clock, found once and joined: as an EXISTS in both the column
    # and the status, PostgreSQL scanned every clock twice for each page.
    # Only the clocks of open matters in scope, found through ix_clocks_subject: an overdue flag
    # needs an open matter, and open matters are few, so the tracker does not read every clock.
    open_matters = select(m.area, m.subject_id).where(MATTER_OPEN, *scope.where(m.township))
    late_clocks = select(k.area, k.subject).where(
        overdue_clock(now(ctx)), tuple_(k.area, k.subject).in_(open_matters.correlate(None))
    )
    late = late_clocks.group_by(k.area, k.subject).subquery("late")
    overdue = and_(MATTER_OPEN, late.c.subject.is_not(None))
    escalated = and_(MATTER_OPEN, matter_escalated())
    state = case((~MATTER_OPEN, "closed"), (overdue, "overdue"), else_="open")
    query = select(
        m.area,
        m.subject_id,
        m.township,
        m.case_id,
        m.initiator,
        m.opened_at,
        m.closed_at,
        m.last_event_at,
        m.last_event_type,
        case((overdue, 1), else_=0).label("overdue"),
        case((escalated, 1), else_=0).label("escalated"),
        state.label("status"),
    )
    query = query.select_from(
        matters.outerjoin(late, and_(late.c.area == m.area, late.c.subject == m.subject_id))
    ).where(*scope.where(m.township), *span.where(m.opened_at))
    if area is not None:
        query = query.where(m.area == area)
    if unit is not None:
        query = query.where(matter_has_unit(unit))
    if status == "open":
        query = query.where(MATTER_OPEN)
    elif status is not None:
        query = query.where(state == status)
    async with ctx.engine.connect() as conn:
        rows, total = await fetch(conn, query.order_by(m.opened_at.desc().nulls_last(), m.subject_id), page)
        parties: dict[tuple[str, str], list[str]] = defaultdict(list)
        if rows:
            mp = matter_parties.c
            found = await conn.execute(
                select(mp.area, mp.subject_id, mp.unit_id)
                .where(pairs_in(mp.area, mp.subject_id, {(r.area, r.subject_id) for r in rows}))
                .order_by(mp.unit_id)
            )
            for p in found:
                parties[(p.area, p.subject_id)].append(p.unit_id)

    def convert(row: Row[Any]) -> dict[str, Any]:
        item = item_json(row)
        item.update(
            area_name_zh=name_zh(ctx.directory, "area", row.area),
            parties=parties[(row.area, row.subject_id)],
            overdue=bool(row.overdue),
            escalated=bool(row.escalated),
        )
        return item

    return await answer(page, "coordination", COORDINATION_COLUMNS, rows, total, convert)


ANOMALY_COLUMNS = (
    Column("anomaly_id", "异常编号", "Anomaly id"),
    Column("kind_zh", "异常类型", "Kind"),
    Column("category", "类别", "Category"),
    Column("township", "镇街", "Township"),
    Column("area", "领域", "Area"),
    Column("subject", "对象", "Subject"),
    Column("detail", "说明", "Detail"),
    Column("occurred_at", "发生时间", "Occurred at"),
    Column("detected_at", "发现时间", "Detected at"),
    Column("resolved_at", "消除时间", "Resolved at"),
)


@router.get("/v1/anomalies", response_model=Listing[AnomalyItem], responses=LIST_RESPONSES)
async def list_anomalies(
    ctx: Ctx,
    scope: ScopeDep,
    span: PeriodDep,
    page: PageDep,
    kind: Annotated[str | None, Query(description="e.g. repeat_inspection, case_flow_spike")] = None,
    category: Annotated[str | None, Query(description="data_quality, three_systems, risk or flow")] = None,
    subject: Annotated[str | None, Query(description="Id of the case or matter")] = None,
    open: Annotated[
        bool | None, Query(description="true (default): unresolved; false: resolved; omit: all")
    ] = True,
) -> Response:
    """Anomalies, newest first; from/to select by detection time."""
    a = anomalies.c
    query = select(anomalies).where(*scope.where(a.township), *span.where(a.detected_at))
    if kind is not None:
        query = query.where(a.kind == kind)
    if category is not None:
        query = query.where(a.category == category)
    if subject is not None:
        query = query.where(a.subject == subject)
    if open is not None:
        query = query.where(a.resolved_at.is_(None) if open else a.resolved_at.is_not(None))
    async with ctx.engine.connect() as conn:
        rows, total = await fetch(conn, query.order_by(a.detected_at.desc(), a.anomaly_id), page)

    def convert(row: Row[Any]) -> dict[str, Any]:
        item = item_json(row)
        item["kind_zh"] = name_zh(ctx.directory, "kind", row.kind)
        item["open"] = row.resolved_at is None
        return item

    return await answer(page, "anomalies", ANOMALY_COLUMNS, rows, total, convert)
