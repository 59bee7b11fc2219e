"""Registers: the publication register, the responsibility-dispute list (职责争议清单) and the
case-file reviews (案卷评查). Each reads the viewer's townships only."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from sqlalchemy import Row, and_, case, func, or_, select

from events.envelope import TYPE_PREFIX
from projections.schema import cases, clocks, disputes, event_history, file_reviews
from services.api.access import ScopeDep
from services.api.analysis import now
from services.api.context import Ctx
from services.api.export import Column, respond
from services.api.figures import json_list
from services.api.listing import LIST_RESPONSES, Category, Page, PageDep, PeriodDep, UnitDep, fetch
from services.api.models import DisputeItem, FileReviewItem, Listing, PublicationItem
from services.api.render import iso

router = APIRouter()
PUBLISHED = TYPE_PREFIX + "case.published.v1"
WITHDRAWN = TYPE_PREFIX + "case.publication_withdrawn.v1"
PUBLICATION_RULES = ("case.publication", "case.publication_other")


def item_json(row: Row[Any]) -> dict[str, Any]:
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in row._mapping.items()}


async def answer(
    page: Page,
    name: str,
    columns: Iterable[Column],
    rows: Sequence[Row[Any]],
    total: int,
    convert: Callable[[Row[Any]], Mapping[str, Any]] = item_json,
) -> Response:
    """The rows as a list response; an export turns them into items in its worker thread."""
    return await respond(
        page.format,
        name,
        tuple(columns),
        rows,
        total=total,
        limit=page.limit,
        offset=page.offset,
        convert=convert,
    )


PUBLICATION_COLUMNS = (
    Column("case_id", "案件编号", "Case id"),
    Column("township", "镇街", "Township"),
    Column("handling_unit", "办案单位", "Handling unit"),
    Column("decided_at", "决定时间", "Decided at"),
    Column("deadline", "公示期限", "Deadline"),
    Column("published_at", "公示时间", "Published at"),
    Column("publication_id", "公示记录", "Publication"),
    Column("withdrawn_at", "撤回时间", "Withdrawn at"),
    Column("status", "状态", "Status"),
)


@router.get("/v1/publications/register", response_model=Listing[PublicationItem], responses=LIST_RESPONSES)
async def publication_register(
    ctx: Ctx,
    scope: ScopeDep,
    span: PeriodDep,
    page: PageDep,
    unit: UnitDep,
    category: Category = None,
    status: Annotated[
        Literal["pending", "overdue", "published", "withdrawn"] | None,
        Query(description="pending, overdue (past the publication deadline), published or withdrawn"),
    ] = None,
) -> Response:
    """Decided cases and their publication (执法公示): the deadline of the publication clock, the
    latest publication and a withdrawal after it. from/to select by decision time."""
    c, h, k = cases.c, event_history.c, clocks.c
    # The filters on cases alone, applied to the event history and the clocks as well: a township
    # office reads its township's publications, not the district's.
    case_filters = [*scope.where(c.township), *span.where(c.decided_at)]
    if unit is not None:
        case_filters.append(c.handling_unit == unit)
    if category is not None:
        case_filters.append(c.category == category)
    in_scope = select(c.case_id).where(*case_filters)
    published, withdrawn = h.type == PUBLISHED, h.type == WITHDRAWN
    # Publications and withdrawals in one pass over the event history.
    pub = (
        select(
            h.subject,
            func.max(case((published, h.occurred_at))).label("at"),
            func.max(case((published, h.event_id))).label("event_id"),
            func.max(case((withdrawn, h.occurred_at))).label("withdrawn_at"),
        )
        .where(h.area == "case", h.type.in_((PUBLISHED, WITHDRAWN)))
        .group_by(h.subject)
    )
    due = (
        select(k.subject, func.min(k.deadline).label("deadline"))
        .where(k.area == "case", k.rule_id.in_(PUBLICATION_RULES), k.started_at.is_not(None))
        .group_by(k.subject)
    )
    if case_filters:
        pub = pub.where(h.subject.in_(in_scope))
        due = due.where(k.subject.in_(in_scope))
    pubs, dues = pub.subquery("pub"), due.subquery("due")
    state = case(
        (and_(pubs.c.at.is_not(None), pubs.c.withdrawn_at >= pubs.c.at), "withdrawn"),
        (pubs.c.at.is_not(None), "published"),
        (dues.c.deadline < now(ctx), "overdue"),
        else_="pending",
    )
    query = (
        select(
            c.case_id,
            c.township,
            c.handling_unit,
            c.category,
            c.outcome,
            c.decided_at,
            dues.c.deadline,
            pubs.c.at.label("published_at"),
            pubs.c.event_id.label("publication_id"),
            pubs.c.withdrawn_at,
            state.label("status"),
        )
        .select_from(
            cases.outerjoin(pubs, pubs.c.subject == c.case_id).outerjoin(dues, dues.c.subject == c.case_id)
        )
        .where(or_(c.decided_at.is_not(None), pubs.c.at.is_not(None)), *case_filters)
    )
    if status is not None:
        query = query.where(state == status)
    async with ctx.engine.connect() as conn:
        rows, total = await fetch(conn, query.order_by(c.decided_at.desc().nulls_last(), c.case_id), page)
    return await answer(page, "publication-register", PUBLICATION_COLUMNS, rows, total)


DISPUTE_COLUMNS = (
    Column("dispute_id", "争议编号", "Dispute id"),
    Column("township", "镇街", "Township"),
    Column("matter", "争议事项", "Matter"),
    Column("units", "涉及单位", "Units"),
    Column("status", "状态", "Status"),
    Column("raised_at", "提出时间", "Raised at"),
    Column("referred_to", "提请单位", "Referred to"),
    Column("decided_at", "认定时间", "Decided at"),
    Column("responsible_unit", "认定责任单位", "Responsible unit"),
    Column("list_entry_id", "清单条目", "List entry"),
    Column("matter_category", "事项类别", "Matter category"),
    Column("listed_at", "列入清单时间", "Listed at"),
)


@router.get("/v1/disputes", response_model=Listing[DisputeItem], responses=LIST_RESPONSES)
async def dispute_list(
    ctx: Ctx,
    scope: ScopeDep,
    span: PeriodDep,
    page: PageDep,
    unit: UnitDep,
    category: Annotated[str | None, Query(description="The list entry's matter category")] = None,
    status: Annotated[
        Literal["raised", "referred", "decided", "listed"] | None, Query(description="The dispute's stage")
    ] = None,
) -> Response:
    """职责争议清单: disputes from raising to their entry in the district's list. `unit`: a unit in
    dispute, the referee or the unit found responsible; from/to select by raising time."""
    d = disputes.c
    query = select(disputes).where(*scope.where(d.township), *span.where(d.raised_at))
    if unit is not None:
        query = query.where(
            or_(
                d.units.contains(f'"{unit}"', autoescape=True),
                d.referred_to == unit,
                d.responsible_unit == unit,
            )
        )
    if category is not None:
        query = query.where(d.matter_category == category)
    if status is not None:
        query = query.where(d.status == status)
    async with ctx.engine.connect() as conn:
        rows, total = await fetch(conn, query.order_by(d.raised_at.desc().nulls_last(), d.dispute_id), page)
    return await answer(page, "disputes", DISPUTE_COLUMNS, rows, total, _dispute_json)


def _dispute_json(row: Row[Any]) -> dict[str, Any]:
    item = item_json(row)
    item["units"] = json_list(row.units)
    return item


REVIEW_COLUMNS = (
    Column("review_id", "评查编号", "Review id"),
    Column("reviewed_unit", "被评查单位", "Reviewed unit"),
    Column("township", "镇街", "Township"),
    Column("case_id", "案件编号", "Case id"),
    Column("case_number", "立案文号", "Case number"),
    Column("score", "得分", "Score"),
    Column("passed", "合格", "Passed"),
    Column("problems", "问题数", "Problems"),
    Column("reviewing_body", "评查机构", "Reviewing body"),
    Column("review_batch", "评查批次", "Batch"),
    Column("scored_at", "评分时间", "Scored at"),
)


@router.get("/v1/file-reviews", response_model=Listing[FileReviewItem], responses=LIST_RESPONSES)
async def list_file_reviews(
    ctx: Ctx,
    scope: ScopeDep,
    span: PeriodDep,
    page: PageDep,
    unit: UnitDep,
    passed: Annotated[bool | None, Query(description="true: passed only; false: failed only")] = None,
    batch: Annotated[str | None, Query(description="A review batch")] = None,
) -> Response:
    """Scored case files (案卷评查), newest first. `unit`: the reviewed unit; from/to: scoring time."""
    f = file_reviews.c
    query = select(file_reviews).where(*scope.where(f.township), *span.where(f.scored_at))
    if unit is not None:
        query = query.where(f.reviewed_unit == unit)
    if passed is not None:
        query = query.where(f.passed.is_(passed))
    if batch is not None:
        query = query.where(f.review_batch == batch)
    async with ctx.engine.connect() as conn:
        rows, total = await fetch(conn, query.order_by(f.scored_at.desc(), f.review_id), page)
    return await answer(page, "file-reviews", REVIEW_COLUMNS, rows, total)
