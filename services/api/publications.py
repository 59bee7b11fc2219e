"""The publication feed (执法公示): published decisions, as JSON and as Atom, personal data masked.

A publication that was withdrawn (Art. 48) leaves the feed. The feed carries no party data at all
(the projections do not keep it), and free text is masked for ID and phone numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import and_, select

from events.envelope import TYPE_PREFIX
from events.masking import mask_text
from projections.schema import cases, event_history
from services.api.context import ApiContext, Ctx
from services.api.render import iso

router = APIRouter()
Township = Annotated[str | None, Query(description="Only this township's publications")]
Limit = Annotated[int, Query(ge=1, le=500, description="Newest entries to return (1..500)")]
PUBLISHED = TYPE_PREFIX + "case.published.v1"
WITHDRAWN = TYPE_PREFIX + "case.publication_withdrawn.v1"
ATOM = "http://www.w3.org/2005/Atom"


async def _entries(ctx: ApiContext, township: str | None, limit: int) -> list[dict[str, Any]]:
    h, w, c = event_history.alias("h"), event_history.alias("w"), cases.c
    withdrawn = (
        select(w.c.event_id)
        .where(and_(w.c.area == "case", w.c.subject == h.c.subject, w.c.type == WITHDRAWN))
        .where(w.c.occurred_at >= h.c.occurred_at)
        .exists()
    )
    query = (
        select(h.c.event_id, h.c.occurred_at, cases)
        .join(cases, c.case_id == h.c.subject)
        .where(h.c.area == "case", h.c.type == PUBLISHED, ~withdrawn)
        .order_by(h.c.occurred_at.desc(), h.c.event_id)
        .limit(limit)
    )
    if township is not None:
        query = query.where(c.township == township)
    async with ctx.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        {
            "id": r.event_id,
            "case_id": r.case_id,
            "case_number": r.case_number,
            "title": mask_text(r.title),
            "township": r.township,
            "township_name": ctx.directory.townships[r.township].name_zh
            if r.township in ctx.directory.townships
            else None,
            "category": r.category,
            "handling_unit": r.handling_unit,
            "outcome": r.outcome,
            "fine_amount_fen": r.fine_amount_fen,
            "decided_at": iso(r.decided_at),
            "published_at": iso(r.occurred_at),
        }
        for r in rows
    ]


class FeedEntry(BaseModel):
    id: str
    case_id: str
    case_number: str | None
    title: str | None
    township: str | None
    township_name: str | None
    category: str | None
    handling_unit: str | None
    outcome: str | None
    fine_amount_fen: int | None
    decided_at: str | None
    published_at: str | None


class Feed(BaseModel):
    items: list[FeedEntry]


@router.get("/v1/publications", response_model=Feed)
async def publications(ctx: Ctx, township: Township = None, limit: Limit = 100) -> JSONResponse:
    """Public: published decisions, newest first, personal data masked. Needs no key."""
    return JSONResponse({"items": await _entries(ctx, township, limit)})


@router.get(
    "/v1/publications.atom",
    responses={200: {"content": {"application/atom+xml": {"schema": {"type": "string"}}}}},
)
async def publications_atom(
    request: Request, ctx: Ctx, township: Township = None, limit: Limit = 100
) -> Response:
    """Public: the same feed as Atom."""
    entries = await _entries(ctx, township, limit)
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")
    ET.SubElement(
        feed, f"{{{ATOM}}}title"
    ).text = "番禺区镇街综合行政执法公示 | Panyu enforcement publications"
    ET.SubElement(feed, f"{{{ATOM}}}id").text = f"urn:liandong:publications:{township or 'all'}"
    updated = entries[0]["published_at"] if entries else datetime.now(UTC).isoformat()
    ET.SubElement(feed, f"{{{ATOM}}}updated").text = updated
    ET.SubElement(feed, f"{{{ATOM}}}link", href=str(request.url), rel="self")
    for e in entries:
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        ET.SubElement(entry, f"{{{ATOM}}}id").text = f"urn:uuid:{e['id']}"
        ET.SubElement(
            entry, f"{{{ATOM}}}title"
        ).text = f"{e['case_number'] or e['case_id']} {e['title'] or ''}".strip()
        ET.SubElement(entry, f"{{{ATOM}}}updated").text = e["published_at"]
        fine = f"，罚款 {e['fine_amount_fen'] / 100:.2f} 元" if e["fine_amount_fen"] else ""
        summary = (
            f"{e['township_name'] or e['township'] or ''} {e['category'] or ''}：{e['outcome'] or ''}{fine}"
        )
        ET.SubElement(entry, f"{{{ATOM}}}summary").text = summary
    body = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return Response(body, media_type="application/atom+xml; charset=utf-8")
