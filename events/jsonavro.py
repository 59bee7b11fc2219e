"""Convert JSON event data into Avro-ready values, naming the exact field on every error.

fastavro's own validation reports the whole datum; publishers need `data.township: missing`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

RefCheck = Callable[[str, str], bool]
"""(ref kind, value) -> known? Used for fields annotated with `liandong.ref`."""


class DataError(ValueError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


_INT_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
MAX_STRING = 8192


# datetime.fromisoformat alone also takes week dates, missing seconds and "+0800" offsets.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


def parse_rfc3339(text: str) -> datetime | None:
    """Parse an RFC 3339 timestamp with an explicit offset into UTC; None if it is not one.

    Events keep the instant, in UTC: stores such as SQLite drop offsets silently."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    fraction = match.group(1)
    if fraction is not None and len(fraction) > 7:
        # Python keeps microseconds; nanosecond digits beyond them carry no meaning here.
        text = text.replace(fraction, fraction[:7], 1)
    try:
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def from_json(
    schema: Any, value: Any, path: str, refs: RefCheck | None = None, names: dict[str, Any] | None = None
) -> Any:
    names = {} if names is None else names
    if isinstance(schema, list):
        return _union(schema, value, path, refs, names)
    if isinstance(schema, str):
        if schema in names:
            return from_json(names[schema], value, path, refs, names)
        return _primitive(schema, None, value, path)
    kind = schema["type"]
    if kind == "record":
        names[schema["name"]] = schema
        names[f"{schema.get('namespace', '')}.{schema['name']}"] = schema
        return _record(schema, value, path, refs, names)
    if kind == "enum":
        names[schema["name"]] = schema
        if not isinstance(value, str) or value not in schema["symbols"]:
            raise DataError(path, f"must be one of {', '.join(schema['symbols'])}")
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise DataError(path, "must be an array")
        return [from_json(schema["items"], v, f"{path}[{i}]", refs, names) for i, v in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise DataError(path, "must be an object")
        return {k: from_json(schema["values"], v, f"{path}.{k}", refs, names) for k, v in value.items()}
    return _primitive(kind, schema.get("logicalType"), value, path)


def _record(
    schema: Mapping[str, Any], value: Any, path: str, refs: RefCheck | None, names: dict[str, Any]
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(path, "must be an object")
    known = {f["name"] for f in schema["fields"]}
    for key in value:
        if key not in known:
            raise DataError(f"{path}.{key}", "unknown field")
    out: dict[str, Any] = {}
    for f in schema["fields"]:
        name = f["name"]
        fpath = f"{path}.{name}"
        if name not in value:
            if "default" not in f:
                raise DataError(fpath, "required field missing")
            out[name] = f["default"]
            continue
        out[name] = from_json(f["type"], value[name], fpath, refs, names)
        ref = f.get("liandong.ref")
        if ref and refs is not None and out[name] is not None:
            values = out[name] if isinstance(out[name], list) else [out[name]]
            for i, item in enumerate(values):
                if not refs(ref, item):
                    where = f"{fpath}[{i}]" if isinstance(out[name], list) else fpath
                    raise DataError(where, f"unknown {ref} '{item}'")
    return out


def _union(branches: list[Any], value: Any, path: str, refs: RefCheck | None, names: dict[str, Any]) -> Any:
    if value is None:
        if "null" in branches:
            return None
        raise DataError(path, "must not be null")
    errors: list[DataError] = []
    for branch in branches:
        if branch == "null":
            continue
        try:
            return from_json(branch, value, path, refs, names)
        except DataError as exc:
            errors.append(exc)
    raise errors[0] if len(errors) == 1 else DataError(path, "matches no allowed type")


def _primitive(kind: str, logical: str | None, value: Any, path: str) -> Any:
    if logical in ("timestamp-millis", "timestamp-micros"):
        parsed = parse_rfc3339(value) if isinstance(value, str) else None
        if parsed is None:
            raise DataError(path, "must be an RFC 3339 timestamp with offset")
        return parsed
    if logical == "date":
        try:
            return date.fromisoformat(value) if isinstance(value, str) else _fail(path)
        except ValueError:
            raise DataError(path, "must be a date YYYY-MM-DD") from None
    if kind == "string":
        if not isinstance(value, str):
            raise DataError(path, "must be a string")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(path, "is not valid Unicode text (lone surrogate)") from None
        if len(value) > MAX_STRING:
            raise DataError(path, f"longer than {MAX_STRING} characters")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise DataError(path, "must be true or false")
        return value
    if kind in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(path, "must be an integer")
        low, high = _INT_RANGES[kind]
        if not low <= value <= high:
            raise DataError(path, "integer out of range")
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise DataError(path, "must be a number")
        return float(value)
    if kind == "null":
        if value is not None:
            raise DataError(path, "must be null")
        return None
    raise DataError(path, f"unsupported schema type {kind}")


def _fail(path: str) -> Any:
    raise DataError(path, "must be a date YYYY-MM-DD")
