"""RFC 9457 problem details, with a Simplified Chinese title beside the English one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse

from connectors.http_gateway.ingest import FieldProblem

PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    reason: str,
    title: str,
    title_zh: str,
    errors: Sequence[FieldProblem] = (),
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:liandong:problem:{reason.replace('_', '-')}",
        "title": title,
        "title_zh": title_zh,
        "status": status,
    }
    if errors:
        body["detail"] = "; ".join(
            (f"[{e.index}] " if e.index is not None else "") + f"{e.field}: {e.reason}" for e in errors
        )
        body["errors"] = [e.as_json() for e in errors]
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def unknown_township(code: str) -> JSONResponse:
    return problem(
        400,
        "invalid_query",
        "Unknown township",
        "未知镇街",
        [FieldProblem("township", f"'{code}' is not a township code")],
    )
