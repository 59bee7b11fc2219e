"""Turn a CloudEvents HTTP request (structured or batch mode) into validated envelopes.

Pure: no I/O (the hub's clock is passed in). Every rejection names the field and the reason, so
that the publishing unit's developer can fix the request without asking anyone. A batch is
all-or-nothing: if one event is invalid, none is published, and every invalid event is listed with
its index. Who may say what is decided by `events/grants.py`, shared with the SDK, the importer
and the worker; hostile input (depth, size, clock skew, text the store cannot keep) is refused here
before anything is encoded (docs/hostile-input.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from events.catalog import Catalog
from events.directory import Directory
from events.envelope import SPECVERSION, Envelope
from events.grants import Refusal, source_refusal, township_refusal, type_refusal
from events.grants import township_fields as township_fields  # re-exported: services/api/scope.py
from events.ids import parse_uuid
from events.jsonavro import DataError, from_json, parse_rfc3339
from events.storable import data_problem

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
BINARY = "binary"
JSON = "application/json"
CE_HEADER = "ce-"

REQUIRED = ("specversion", "id", "source", "type", "subject", "time", "data")
OPTIONAL = ("datacontenttype", "dataschema")
_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


@dataclass(frozen=True, slots=True)
class FieldProblem:
    field: str
    reason: str
    index: int | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "reason": self.reason}
        if self.index is not None:
            out["index"] = self.index
        return out


@dataclass(slots=True)
class IngestRejected(Exception):
    """A request the gateway refuses. `reason` is a bounded label for metrics."""

    status: int
    reason: str
    title: str
    title_zh: str
    problems: list[FieldProblem] = field(default_factory=list)
    event_type: str = "unknown"

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.title}"


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 1024 * 1024
    max_event_bytes: int = 64 * 1024
    max_batch_events: int = 1000
    # The deepest catalog event is 4 levels (event > data > record > array), 5 in a batch. Far
    # below what the recursive JSON, Avro and validation code can take, so none of it can overflow.
    max_depth: int = 32
    # A fact cannot have occurred in the future; a day covers any publisher's clock error and time
    # zone mistake, while a year typed wrongly (2062 for 2026) is caught.
    max_future: timedelta = timedelta(hours=24)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def request_mode(content_type: str | None, headers: Mapping[str, str]) -> str:
    """Structured or batch by media type; binary when the attributes travel as `ce-` headers."""
    mode = media_type(content_type)
    if mode in (STRUCTURED, BATCH):
        return mode
    if any(name.lower().startswith(CE_HEADER) for name in headers) and mode in (JSON, ""):
        return BINARY
    raise IngestRejected(
        415,
        "unsupported_media_type",
        f"Content-Type must be {STRUCTURED}, {BATCH}, or {JSON} with ce- headers (binary mode)",
        f"Content-Type 必须是 {STRUCTURED}、{BATCH}，或 {JSON} 加 ce- 请求头（二进制模式）",
        [FieldProblem("Content-Type", f"got '{mode or 'nothing'}'")],
    )


def parse_request(
    content_type: str | None,
    body: bytes,
    publisher_unit: str,
    catalog: Catalog,
    directory: Directory,
    limits: Limits,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> list[Envelope]:
    """Validate a request in any of the CloudEvents HTTP binding's three modes.

    `now` is the hub's clock (the system clock when not given), against which `time` is bounded."""
    headers = headers or {}
    now = now or datetime.now(UTC)
    mode = request_mode(content_type, headers)
    if len(body) > limits.max_body_bytes:
        raise _too_large(f"body is {len(body)} bytes; the limit is {limits.max_body_bytes}")
    doc = parse_json(body, limits.max_depth)
    items = [_binary_item(headers, doc)] if mode == BINARY else _items(mode, doc, limits)
    if publisher_unit not in directory.units:
        raise IngestRejected(
            403,
            "unknown_unit",
            "The key's unit is not in the directory",
            "密钥所属单位不在名录中",
            [FieldProblem("Authorization", f"unit '{publisher_unit}' is not registered")],
        )
    events: list[Envelope] = []
    problems: list[FieldProblem] = []
    forbidden: list[str] = []
    index_of = (lambda i: i) if mode == BATCH else (lambda i: None)
    for i, item in enumerate(items):
        try:
            events.append(validate_event(item, publisher_unit, catalog, directory, limits, now))
        except Forbidden as exc:
            forbidden.append(exc.reason)
            problems.append(FieldProblem(exc.field, exc.detail, index_of(i)))
        except DataError as exc:
            problems.append(FieldProblem(exc.path, exc.reason, index_of(i)))
    if forbidden:
        title, title_zh = FORBIDDEN_TITLES[forbidden[0]]
        raise IngestRejected(403, forbidden[0], title, title_zh, problems, _first_type(items))
    if problems:
        raise IngestRejected(
            422,
            "invalid_event",
            "The event does not match the contract",
            "事件不符合接口约定",
            problems,
            _first_type(items),
        )
    return events


def parse_json(body: bytes, max_depth: int) -> Any:
    """Strict JSON (RFC 8259) of bounded depth, or a 400 problem: never a crash on hostile bytes."""
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise _too_deep(max_depth) from None
    except (UnicodeDecodeError, ValueError) as exc:
        # ValueError also covers JSONDecodeError, NaN/Infinity, and integers beyond Python's
        # 4,300-digit conversion limit, which json.loads reports as a bare ValueError.
        raise IngestRejected(
            400,
            "malformed_json",
            "The body is not valid UTF-8 JSON",
            "请求体不是有效的 UTF-8 JSON",
            [FieldProblem("body", str(exc)[:200])],
        ) from None
    if _deeper_than(doc, max_depth):
        raise _too_deep(max_depth)
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259)")


def _deeper_than(doc: Any, limit: int) -> bool:
    """Iterative, so that the check itself cannot overflow the stack."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _too_deep(limit: int) -> IngestRejected:
    return IngestRejected(
        400,
        "too_deep",
        "The JSON is nested too deeply",
        "JSON 嵌套层级过深",
        [FieldProblem("body", f"nested deeper than {limit} levels")],
    )


FORBIDDEN_TITLES = {
    "forged_source": ("An event's source is not the unit that owns the key", "事件来源与密钥所属单位不一致"),
    "type_not_permitted": ("The unit may not publish this event type", "该单位无权发布此类事件"),
    "township_not_permitted": (
        "The unit may not publish about this township",
        "该单位无权发布涉及该镇街的事件",
    ),
}


class Forbidden(Exception):
    """The event is well-formed, but its publisher may not say it."""

    def __init__(self, reason: str, field: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.field = field
        self.detail = detail

    @classmethod
    def of(cls, refusal: Refusal) -> Forbidden:
        return cls(refusal.reason, refusal.field, refusal.detail)


def _forbid(refusal: Refusal | None) -> None:
    if refusal is not None:
        raise Forbidden.of(refusal)


def _binary_item(headers: Mapping[str, str], data: Any) -> dict[str, Any]:
    """Binary mode: attributes from `ce-` headers (percent-encoded, spec 3.1.3.2), data is the body."""
    item: dict[str, Any] = {
        name.lower().removeprefix(CE_HEADER): unquote(value)
        for name, value in headers.items()
        if name.lower().startswith(CE_HEADER)
    }
    if "data" in item or "datacontenttype" in item:
        raise IngestRejected(
            400,
            "malformed_event",
            "Binary mode carries data in the body",
            "二进制模式的数据应放在请求体中",
            [FieldProblem("ce-data", "not an attribute in binary mode")],
        )
    item["data"] = data
    item["datacontenttype"] = JSON
    return item


def _items(mode: str, doc: Any, limits: Limits) -> list[Any]:
    if mode == STRUCTURED:
        if not isinstance(doc, dict):
            raise IngestRejected(
                400,
                "malformed_event",
                "A structured event must be a JSON object",
                "结构化事件必须是 JSON 对象",
                [FieldProblem("body", "not an object")],
            )
        return [doc]
    if not isinstance(doc, list):
        raise IngestRejected(
            400,
            "malformed_batch",
            "A batch must be a JSON array",
            "批量请求必须是 JSON 数组",
            [FieldProblem("body", "not an array")],
        )
    if not doc:
        raise IngestRejected(
            400,
            "empty_batch",
            "The batch holds no events",
            "批量请求中没有事件",
            [FieldProblem("body", "empty array")],
        )
    if len(doc) > limits.max_batch_events:
        raise _too_large(f"batch holds {len(doc)} events; the limit is {limits.max_batch_events}")
    return doc


def _too_large(reason: str) -> IngestRejected:
    return IngestRejected(
        413, "too_large", "The request is too large", "请求过大", [FieldProblem("body", reason)]
    )


def _first_type(items: list[Any]) -> str:
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("type"), str):
            return str(item["type"])
    return "unknown"


def validate_event(
    item: Any,
    publisher: str,
    catalog: Catalog,
    directory: Directory,
    limits: Limits,
    now: datetime | None = None,
) -> Envelope:
    """One event in structured JSON form, checked as the gateway checks it (also used by the SDK)."""
    if not isinstance(item, dict):
        raise DataError("event", "must be a JSON object")
    # surrogatepass: a lone surrogate must reach the field check that names it, not crash here.
    if len(json.dumps(item, ensure_ascii=False).encode("utf-8", "surrogatepass")) > limits.max_event_bytes:
        raise DataError("event", f"larger than {limits.max_event_bytes} bytes")
    for name in item:
        if name not in REQUIRED and name not in OPTIONAL:
            hint = "; send data as JSON in 'data'" if name == "data_base64" else ""
            # An empty name is still named (found by tests/fuzz): a problem must point somewhere.
            raise DataError(name or '""', f"unknown attribute{hint}")
    for name in REQUIRED:
        if name not in item:
            raise DataError(name, "required attribute missing")
    attrs: Mapping[str, Any] = item
    if attrs["specversion"] != SPECVERSION:
        raise DataError("specversion", f"must be '{SPECVERSION}'")
    event_id = _string(attrs, "id")
    if parse_uuid(event_id) is None:
        raise DataError("id", "must be a UUID (time-ordered UUIDv7 recommended)")
    source = _string(attrs, "source")
    _forbid(source_refusal(source, directory, publisher))
    event_type = _string(attrs, "type")
    if event_type not in catalog.kinds:
        raise DataError("type", f"unknown event type '{event_type}'")
    unit = directory.units[publisher]
    _forbid(type_refusal(unit, event_type))
    subject = _string(attrs, "subject")
    if not _SUBJECT.fullmatch(subject):
        raise DataError("subject", "must be 1-128 characters of A-Z a-z 0-9 . _ : / -")
    occurred = parse_rfc3339(_string(attrs, "time"))
    if occurred is None:
        raise DataError("time", "must be an RFC 3339 timestamp with offset")
    clock = now or datetime.now(UTC)
    if occurred - clock > limits.max_future:
        raise DataError(
            "time",
            f"{occurred.isoformat()} is more than {limits.max_future.total_seconds() / 3600:g} h ahead of "
            "the hub's clock "
            f"({clock.astimezone(UTC).isoformat(timespec='seconds')}); an event records a fact that occurred",
        )
    content = attrs.get("datacontenttype", "application/json")
    if content != "application/json":
        raise DataError("datacontenttype", "must be application/json")
    if "dataschema" in attrs:
        _string(attrs, "dataschema")
    schema = catalog.get(event_type).latest
    data = from_json(schema, attrs["data"], "data", directory.knows)
    unstorable = data_problem(data)
    if unstorable is not None:
        raise DataError(*unstorable)
    _forbid(township_refusal(unit, township_fields(schema), data))
    return Envelope(
        id=event_id.lower(), type=event_type, source=source, subject=subject, time=occurred, data=data
    )


def _string(attrs: Mapping[str, Any], name: str) -> str:
    value = attrs[name]
    if not isinstance(value, str) or not value:
        raise DataError(name, "must be a non-empty string")
    if len(value) > 512:
        raise DataError(name, "longer than 512 characters")
    return value
