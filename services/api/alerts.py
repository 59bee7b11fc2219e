"""The closed loop over HTTP: inboxes, acknowledgements, supervision orders, clocks, live stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Row, Select, and_, select, update

from connectors.http_gateway.ingest import FieldProblem
from connectors.kafka.publisher import BrokerUnavailable
from events.catalog import topic_for
from events.envelope import TYPE_PREFIX, Envelope
from events.ids import uuid7
from projections.schema import alert_recipients, alerts, clocks, deliveries
from services.api.access import ScopeDep, Viewer, ViewerDep, WriterDep
from services.api.auth import record_rejection
from services.api.context import ApiContext, Ctx
from services.api.export import Column, Format, respond
from services.api.figures import CLOCK_TOWNSHIP, CLOCKS_WITH_TOWNSHIP
from services.api.labels import name_zh
from services.api.listing import PAGE_MAX, Page, fetch
from services.api.problems import problem
from services.api.render import clock_json
from services.api.render import iso as _iso

router = APIRouter()


def _alert_json(row: Row[Any]) -> dict[str, Any]:
    out = dict(row._mapping)
    for name in ("deadline", "threshold", "raised_at", "withdrawn_at", "acknowledged_at"):
        out[name] = _iso(out[name])
    out["proposed_order"] = json.loads(out["proposed_order"]) if out["proposed_order"] else None
    out["open"] = out["withdrawn_at"] is None
    return out


def _inbox_query(unit: str) -> Select[Any]:
    r = alert_recipients.c
    return select(alerts).where(
        select(r.unit_id).where(and_(r.alert_id == alerts.c.alert_id, r.unit_id == unit)).exists()
    )


def _inbox_unit(ctx: ApiContext, request: Request, viewer: Viewer, unit: str | None) -> str | Response:
    """A unit reads its own inbox; the supervision section (and the auditor) may read any unit's."""
    caller = viewer.unit
    if unit is None or unit == caller:
        return caller
    if not viewer.reads_all:
        record_rejection(ctx, request.scope, "unit_forbidden", viewer.who)
        return problem(
            403,
            "forbidden",
            "Only supervisors read other units' inboxes",
            "仅督办部门可查看其他单位的待办",
            [FieldProblem("unit", f"'{caller}' may read only its own inbox")],
        )
    if unit not in ctx.directory.units:
        return problem(
            400, "invalid_query", "Unknown unit", "未知单位", [FieldProblem("unit", f"'{unit}' is unknown")]
        )
    return unit


INBOX_COLUMNS = (
    Column("alert_id", "预警编号", "Alert id"),
    Column("level_zh", "级别", "Level"),
    Column("rule_name_zh", "事项", "Rule"),
    Column("about_area_zh", "事项类型", "Area"),
    Column("about_subject", "事项编号", "Subject"),
    Column("township_zh", "镇街", "Township"),
    Column("responsible_unit_zh", "责任单位", "Responsible unit"),
    Column("deadline", "期限", "Deadline"),
    Column("overdue_seconds", "超期秒数", "Seconds overdue"),
    Column("raised_at", "发出时间", "Raised at"),
    Column("acknowledged_at", "确认时间", "Acknowledged at"),
    Column("acknowledged_by", "确认单位", "Acknowledged by"),
    Column("withdrawn_at", "撤回时间", "Withdrawn at"),
    Column("citation", "依据", "Basis"),
)
LEVELS_ZH = {
    "yellow": "黄色预警",
    "red": "红色预警",
    "escalated": "升级督办",
    "re_escalated": "再次升级督办",
    "risk": "风险预警",
}


def _named(ctx: ApiContext, alert: dict[str, Any]) -> dict[str, Any]:
    """An alert for a spreadsheet: names a person reads instead of the codes the JSON keeps."""
    d = ctx.directory
    return {
        **alert,
        "level_zh": LEVELS_ZH.get(alert["level"], alert["level"]),
        "about_area_zh": name_zh(d, "area", alert["about_area"]),
        "township_zh": name_zh(d, "township", alert["township"]) if alert["township"] else "",
        "responsible_unit_zh": (
            name_zh(d, "unit", alert["responsible_unit"]) if alert["responsible_unit"] else ""
        ),
    }


@router.get("/v1/inbox")
async def inbox(
    request: Request,
    ctx: Ctx,
    viewer: ViewerDep,
    unit: Annotated[str | None, Query(description="Another unit's inbox (supervisors only)")] = None,
    level: Annotated[str | None, Query(description="yellow, red, escalated, re_escalated or risk")] = None,
    open: Annotated[bool | None, Query(description="true: not withdrawn")] = True,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format: Annotated[
        Format, Query(description="json (newest first, up to limit), or csv / xlsx: every matching alert")
    ] = "json",
) -> Response:
    who = _inbox_unit(ctx, request, viewer, unit)
    if isinstance(who, Response):
        return who
    query = _inbox_query(who).order_by(alerts.c.raised_at.desc(), alerts.c.alert_id)
    if level is not None:
        query = query.where(alerts.c.level == level)
    if open is not None:
        query = query.where(alerts.c.withdrawn_at.is_(None) if open else alerts.c.withdrawn_at.is_not(None))
    async with ctx.engine.connect() as conn:
        if format == "json":
            rows = (await conn.execute(query.limit(limit))).all()
            return JSONResponse({"unit": who, "items": [_alert_json(r) for r in rows]})
        rows, total = await fetch(conn, query, Page(PAGE_MAX, 0, format))
    items = [_named(ctx, _alert_json(r)) for r in rows]
    return await respond(format, f"inbox-{who}", INBOX_COLUMNS, items, total=total, limit=total, offset=0)


@router.get("/v1/inbox/stream")
async def inbox_stream(
    request: Request,
    ctx: Ctx,
    viewer: ViewerDep,
    unit: Annotated[str | None, Query()] = None,
    poll_ms: Annotated[int, Query(ge=100, le=10_000)] = 1000,
) -> Response:
    """Server-Sent Events: every alert for the unit, and every change to one, as it happens."""
    who = _inbox_unit(ctx, request, viewer, unit)
    if isinstance(who, Response):
        return who

    async def events() -> AsyncIterator[bytes]:
        seen: dict[str, tuple[Any, ...]] = {}
        yield b": liandong inbox stream\n\n"
        while not await request.is_disconnected():
            async with ctx.engine.connect() as conn:
                rows = (await conn.execute(_inbox_query(who).order_by(alerts.c.raised_at))).all()
            for row in rows:
                version = (row.withdrawn_at, row.acknowledged_at)
                if seen.get(row.alert_id) != version:
                    seen[row.alert_id] = version
                    payload = json.dumps(_alert_json(row), ensure_ascii=False)
                    yield f"id: {row.alert_id}\nevent: alert\ndata: {payload}\n\n".encode()
            await asyncio.sleep(poll_ms / 1000)  # the store is shared by processes; poll it

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


class Acknowledgement(BaseModel):
    note: str | None = Field(default=None, max_length=2000)


async def _publish(ctx: ApiContext, event: Envelope) -> Response | None:
    try:
        await ctx.publisher.publish([(topic_for(event.area), ctx.codec.encode(event))])
    except BrokerUnavailable as exc:
        return problem(
            503,
            "broker_unavailable",
            "The event broker did not acknowledge",
            "消息中间件未确认，请稍后重试",
            [FieldProblem("broker", str(exc)[:200])],
            headers={"Retry-After": "5"},
        )
    return None


@router.post("/v1/alerts/{alert_id}/acknowledge", status_code=202)
async def acknowledge(
    alert_id: str, body: Acknowledgement, request: Request, ctx: Ctx, viewer: WriterDep
) -> Response:
    caller = viewer.unit
    async with ctx.engine.connect() as conn:
        row = (
            await conn.execute(
                select(alerts.c.clock_id, alerts.c.case_id).where(alerts.c.alert_id == alert_id)
            )
        ).first()
        recipient = await conn.scalar(
            select(alert_recipients.c.unit_id).where(
                alert_recipients.c.alert_id == alert_id, alert_recipients.c.unit_id == caller
            )
        )
    if row is None:
        return problem(404, "not_found", f"No alert {alert_id}", f"未找到预警 {alert_id}")
    if recipient is None:
        record_rejection(ctx, request.scope, "unit_forbidden", viewer.who)
        return problem(
            403,
            "forbidden",
            "Only a recipient may acknowledge an alert",
            "仅接收单位可确认预警",
            [FieldProblem("Authorization", f"'{caller}' did not receive this alert")],
        )
    event = Envelope(
        id=str(uuid7()),
        type=TYPE_PREFIX + "alert.acknowledged.v1",
        source=caller,
        subject=row.clock_id,
        time=datetime.now(UTC),
        data={"alert_id": alert_id, "by_unit": caller, "note": body.note, "case_id": row.case_id},
    )
    failed = await _publish(ctx, event)
    return failed or JSONResponse({"alert_id": alert_id, "acknowledged_by": caller}, status_code=202)


class SupervisionOrder(BaseModel):
    to_unit: str = Field(description="The unit that must reply")
    about_area: str = Field(description="Area of the stalled matter, e.g. transfer")
    about_subject: str = Field(min_length=1, max_length=128, description="Id of the stalled case or matter")
    reason: str = Field(min_length=1, max_length=2000)
    reply_by: date
    level: str = Field(default="normal", pattern="^(normal|urgent)$")
    township: str | None = None
    case_id: str | None = None


@router.post("/v1/supervision-orders", status_code=202)
async def issue_order(order: SupervisionOrder, request: Request, ctx: Ctx, viewer: WriterDep) -> Response:
    """A supervisor's command; validated here, it becomes a `supervision.order_issued` event."""
    caller = viewer.unit
    unit = ctx.directory.units[caller]
    if not unit.may_publish(TYPE_PREFIX + "supervision.order_issued.v1"):
        record_rejection(ctx, request.scope, "type_not_permitted", viewer.who)
        return problem(
            403,
            "type_not_permitted",
            "Only the supervision section issues orders",
            "仅督办部门可下达督办",
            [FieldProblem("Authorization", f"'{caller}' may not issue supervision orders")],
        )
    problems = []
    if order.to_unit not in ctx.directory.units:
        problems.append(FieldProblem("to_unit", f"'{order.to_unit}' is not a registered unit"))
    if order.township is not None and order.township not in ctx.directory.townships:
        problems.append(FieldProblem("township", f"'{order.township}' is not a township code"))
    if order.about_area not in ctx.catalog.families:
        problems.append(FieldProblem("about_area", f"'{order.about_area}' is not an area of the catalog"))
    now = datetime.now(UTC)
    if order.reply_by < now.date():
        problems.append(FieldProblem("reply_by", "must not be in the past"))
    if problems:
        return problem(422, "invalid_command", "The order is not valid", "督办令不符合要求", problems)
    order_id = f"DB-{uuid7().hex[:16]}"
    data = {
        "to_unit": order.to_unit,
        "township": order.township,
        "about_subject": order.about_subject,
        "about_area": order.about_area,
        "reason": order.reason,
        "reply_by": order.reply_by,
        "level": order.level,
        "case_id": order.case_id,
    }
    kind = ctx.catalog.get(TYPE_PREFIX + "supervision.order_issued.v1")
    known = {f["name"] for f in kind.latest["fields"]}
    defaults = {f["name"]: f.get("default") for f in kind.latest["fields"] if "default" in f}
    event = Envelope(
        id=str(uuid7()),
        type=kind.type,
        source=caller,
        subject=order_id,
        time=now,
        data={**defaults, **{k: v for k, v in data.items() if k in known}},
    )
    failed = await _publish(ctx, event)
    return failed or JSONResponse({"order_id": order_id}, status_code=202)


@router.get("/v1/clocks")
async def list_clocks(
    ctx: Ctx,
    scope: ScopeDep,
    area: Annotated[str | None, Query(description="Area of the matter, e.g. case, transfer")] = None,
    subject: Annotated[str | None, Query(description="Case or matter id")] = None,
    responsible: Annotated[str | None, Query(description="Responsible unit")] = None,
    open: Annotated[bool | None, Query(description="true: running; false: stopped")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """Clocks in the viewer's townships, nearest deadline first."""
    c = clocks.c
    columns: list[Any] = [col for col in clocks.c if col.name != "township"]
    # A clock known only from its stop event (it arrived before its start) has not started yet.
    query = (
        select(*columns, CLOCK_TOWNSHIP.label("township"))
        .select_from(CLOCKS_WITH_TOWNSHIP)
        # A clock started by an event that names no township takes its matter's or its case's.
        .where(c.started_at.is_not(None), *scope.where(CLOCK_TOWNSHIP))
        .order_by(c.deadline, c.clock_id)
        .limit(limit)
    )
    if area is not None:
        query = query.where(c.area == area)
    if subject is not None:
        query = query.where(c.subject == subject)
    if responsible is not None:
        query = query.where(c.responsible == responsible)
    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(cast(Select[Any], query))).all()
    items = [clock_json(r) for r in rows]
    if open is not None:
        items = [i for i in items if i["open"] is open]
    return JSONResponse({"items": items})


@router.get("/v1/deliveries")
async def list_deliveries(
    ctx: Ctx,
    viewer: ViewerDep,
    status: Annotated[str | None, Query(description="pending, delivered or failed")] = None,
    alert_id: Annotated[str | None, Query(description="Deliveries of one alert")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """Webhook deliveries: failed ones stay here, visible, until someone retries them. A unit sees
    its own; the supervision section sees every unit's."""
    d = deliveries.c
    query = select(deliveries).order_by(d.created_at.desc(), d.delivery_id).limit(limit)
    if not viewer.reads_all:
        query = query.where(d.unit_id == viewer.unit)
    if status is not None:
        query = query.where(d.status == status)
    if alert_id is not None:
        query = query.where(d.alert_id == alert_id)
    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    items = []
    for row in rows:
        item = dict(row._mapping)
        for name in ("next_attempt_at", "created_at", "delivered_at"):
            item[name] = _iso(item[name])
        items.append(item)
    return JSONResponse({"items": items})


@router.post("/v1/deliveries/{delivery_id}/retry", status_code=202)
async def retry_delivery(delivery_id: str, request: Request, ctx: Ctx, viewer: WriterDep) -> Response:
    d = deliveries.c
    async with ctx.engine.begin() as conn:
        unit = await conn.scalar(select(d.unit_id).where(d.delivery_id == delivery_id))
        if unit is None:
            return problem(404, "not_found", f"No delivery {delivery_id}", f"未找到推送记录 {delivery_id}")
        if unit != viewer.unit and viewer.role != "district":
            record_rejection(ctx, request.scope, "unit_forbidden", viewer.who)
            return problem(
                403, "forbidden", "Only the receiving unit or a supervisor may retry", "无权重试该推送"
            )
        await conn.execute(
            update(deliveries)
            .where(d.delivery_id == delivery_id)
            .values(status="pending", attempts=0, next_attempt_at=datetime.now(UTC))
        )
    return JSONResponse({"delivery_id": delivery_id, "status": "pending"}, status_code=202)
