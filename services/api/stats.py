"""Yearly figures of the district, computed from the projections (集中汇总).

The same ratios the district publishes (DOMAIN.md, "Figures from the article"), so a simulated year
and a real one can be checked against them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sqlalchemy import and_, func, select

from projections.schema import cases, directory_units
from services.api.access import ScopeDep
from services.api.context import Ctx
from services.api.listing import PROBLEMS
from services.api.models import Calibration

router = APIRouter()

# Years are counted in China Standard Time: a case filed at 00:30 on 1 January belongs to that year.
CST = timezone(timedelta(hours=8))
REVOKED_OR_CHANGED = ("revoked", "changed")
BASIS = {
    "cases_filed": "case.filed 发生在该年（北京时间） | case.filed occurred in the year (CST)",
    "officers": "目录中在册单位的执法人员合计 | officers of units in the directory, not retired",
    "reconsiderations": "该年被提起复议的案件 | cases whose reconsideration was filed in the year",
    "revoked_or_changed": "其中复议决定撤销或变更的 | of those, decided revoked or changed",
}


def year_bounds(year: int) -> tuple[datetime, datetime]:
    # The same instants in UTC: SQLite compares stored UTC text, so its bounds must be UTC too.
    start, end = datetime(year, 1, 1, tzinfo=CST), datetime(year + 1, 1, 1, tzinfo=CST)
    return start.astimezone(UTC), end.astimezone(UTC)


@router.get("/v1/stats/calibration", response_model=Calibration, responses=PROBLEMS)
async def calibration(
    ctx: Ctx,
    scope: ScopeDep,
    year: Annotated[int, Query(ge=2000, le=2100, description="Calendar year, China time")],
) -> JSONResponse:
    """The yearly figures over the townships the viewer reads (the district: every case)."""
    start, end = year_bounds(year)
    c = cases.c
    in_scope = scope.where(c.township)
    filed_in_year = and_(c.filed_at >= start, c.filed_at < end, *in_scope)
    reconsidered_in_year = and_(
        c.reconsideration_filed_at >= start, c.reconsideration_filed_at < end, *in_scope
    )
    async with ctx.engine.connect() as conn:
        filed = (await conn.execute(select(func.count()).where(filed_in_year))).scalar_one()
        reconsiderations = (await conn.execute(select(func.count()).where(reconsidered_in_year))).scalar_one()
        revoked = (
            await conn.execute(
                select(func.count()).where(
                    reconsidered_in_year, c.reconsideration_result.in_(REVOKED_OR_CHANGED)
                )
            )
        ).scalar_one()
        d = directory_units.c
        officers = (
            await conn.execute(
                select(func.coalesce(func.sum(d.officers), 0)).where(
                    d.retired_at.is_(None), *scope.where(d.home_township)
                )
            )
        ).scalar_one()
    return JSONResponse(
        {
            "year": year,
            "cases_filed": int(filed),
            "officers": int(officers),
            "cases_per_officer": round(filed / officers, 2) if officers else None,
            "reconsiderations": int(reconsiderations),
            "revoked_or_changed": int(revoked),
            "basis": BASIS,
        }
    )
