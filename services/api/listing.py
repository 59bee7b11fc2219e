"""The query parameters every list shares (paging, format, period, unit, category), their
validation as 400 problems naming the parameter, and fetching one page or a whole export."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy import ColumnElement, Row, Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from connectors.http_gateway.ingest import FieldProblem
from services.api.context import Ctx
from services.api.export import Format
from services.api.models import ProblemModel
from services.api.problems import problem

T = TypeVar("T")
PAGE_MAX = 1000
EXPORT_MAX = 50_000
# Periods are China Standard Time (UTC+8, no daylight saving): a day starts at 00:00 in Beijing.
CST = timezone(timedelta(hours=8))
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"

PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": ProblemModel, "description": "A query parameter is invalid; `errors` names it"},
    401: {"model": ProblemModel, "description": "No valid API key or session"},
    403: {"model": ProblemModel, "description": "A township outside the viewer's scope"},
}
LIST_RESPONSES: dict[int | str, dict[str, Any]] = {
    **PROBLEMS,
    200: {
        "description": "JSON list; with format=csv or format=xlsx the whole filtered list as a file",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                "schema": {"type": "string", "format": "binary"}
            },
        },
    },
    413: {"model": ProblemModel, "description": f"An export of more than {EXPORT_MAX} rows"},
}


class ProblemError(Exception):
    """Raised by a dependency or helper; answered with its problem+json response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def problem_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return exc.response


def invalid(field: str, reason: str) -> ProblemError:
    return ProblemError(
        problem(
            400, "invalid_query", "Invalid query parameter", "查询参数无效", [FieldProblem(field, reason)]
        )
    )


async def query_problem(request: Request, exc: Exception) -> Response:
    """FastAPI's validation errors as problem+json naming each field: 400 for query and path
    parameters, 422 for a request body (malformed JSON, a missing or mistyped field, too long)."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if not errors:
        return await request_validation_exception_handler(request, exc)
    if all(e["loc"][0] in ("query", "path") for e in errors):
        found = [FieldProblem(str(e["loc"][-1]), str(e["msg"])) for e in errors]
        return problem(400, "invalid_query", "Invalid query parameter", "查询参数无效", found)
    found = [FieldProblem(_body_field(e["loc"]), str(e["msg"])) for e in errors]
    return problem(422, "invalid_body", "The request body is not valid", "请求内容不符合要求", found)


def _body_field(loc: Sequence[Any]) -> str:
    # ("body", "key") -> "key"; a JSON syntax error is located by character offset: "body".
    names = [str(part) for part in loc[1:] if isinstance(part, str)]
    return ".".join(names) or str(loc[0])


# --- paging and format ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    offset: int
    format: Format

    @property
    def export(self) -> bool:
        return self.format != "json"

    def slice(self, items: Sequence[T]) -> list[T]:
        """The page of a list computed in full, or all of it for an export."""
        if self.export:
            check_export(len(items))
            return list(items)
        return list(items[self.offset : self.offset + self.limit])


def check_export(total: int) -> None:
    if total > EXPORT_MAX:
        raise ProblemError(
            problem(
                413,
                "export_too_large",
                f"An export holds at most {EXPORT_MAX} rows",
                f"单次导出不超过 {EXPORT_MAX} 行，请缩小筛选范围",
                [FieldProblem("format", f"{total} rows match; narrow them with township, from and to")],
            )
        )


async def page_params(
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX, description="Rows per page (1..1000)")] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31, description="Rows to skip")] = 0,
    format: Annotated[
        Format,
        Query(
            description="json (one page), csv (UTF-8 with BOM) or xlsx: the files hold every row "
            f"matching the filters, at most {EXPORT_MAX}, and ignore limit and offset"
        ),
    ] = "json",
) -> Page:
    return Page(limit, offset, format)


PageDep = Annotated[Page, Depends(page_params)]


async def fetch(conn: AsyncConnection, query: Select[Any], page: Page) -> tuple[list[Row[Any]], int]:
    """One page of `query` (or all of it for an export) and the number of rows it matches."""
    total = int(await conn.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0)
    if page.export:
        check_export(total)
        return list(await conn.execute(query)), total
    return list(await conn.execute(query.limit(page.limit).offset(page.offset))), total


# --- period --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime | None
    end: datetime | None

    def where(self, column: Any) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.start is not None:
            out.append(column >= self.start)
        if self.end is not None:
            out.append(column < self.end)
        return out


def _day(field: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise invalid(field, f"'{text}' is not a date (YYYY-MM-DD)") from None
    # UTC bounds: SQLite compares the stored UTC text, so a bound must be UTC too.
    return datetime.combine(day, time(0), CST).astimezone(UTC)


async def period_params(
    from_: Annotated[
        str | None,
        Query(
            alias="from", pattern=DATE_PATTERN, description="First day, inclusive (YYYY-MM-DD, China time)"
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(pattern=DATE_PATTERN, description="Day after the last, exclusive (YYYY-MM-DD, China time)"),
    ] = None,
) -> Period:
    start, end = _day("from", from_), _day("to", to)
    if start is not None and end is not None and end <= start:
        raise invalid("to", "must be later than from")
    return Period(start, end)


PeriodDep = Annotated[Period, Depends(period_params)]


# --- filters -------------------------------------------------------------------------------------


async def unit_param(
    ctx: Ctx, unit: Annotated[str | None, Query(description="Directory id of a unit")] = None
) -> str | None:
    if unit is not None and unit not in ctx.directory.units:
        raise invalid("unit", f"'{unit}' is not a unit of the directory")
    return unit


UnitDep = Annotated[str | None, Depends(unit_param)]
Category = Annotated[str | None, Query(description="Case category code, e.g. illegal_construction")]
