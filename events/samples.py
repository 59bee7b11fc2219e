"""Valid example data for any catalog type, as a unit would send it in JSON.

Used by the generated catalog (docs/events.md), by tests that push every type through the hub,
and by anyone writing a connector who wants a starting point.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TEXT_ZH = "示例"


@dataclass(frozen=True, slots=True)
class SampleContext:
    township: str = "shilou"
    unit: str = "shilou.enforcement-office"
    other_unit: str = "shilou.police-station"
    date: str = "2026-11-30"
    timestamp: str = "2026-11-30T09:30:00+08:00"
    full: bool = True


def sample_data(schema: Mapping[str, Any], ctx: SampleContext | None = None) -> dict[str, Any]:
    """Every required field, and (with `ctx.full`) every optional one, filled with plausible values."""
    ctx = ctx or SampleContext()
    return _record(schema, ctx)


def _record(schema: Mapping[str, Any], ctx: SampleContext) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in schema["fields"]:
        if "default" in f and not ctx.full:
            continue
        out[f["name"]] = _value(f["type"], f, ctx)
    return out


def _value(t: Any, f: Mapping[str, Any], ctx: SampleContext) -> Any:
    ref = f.get("liandong.ref")
    if isinstance(t, list):
        branches = [b for b in t if b != "null"]
        return _value(branches[0], f, ctx) if branches else None
    if isinstance(t, dict):
        kind = t["type"]
        if kind == "record":
            return _record(t, ctx)
        if kind == "enum":
            return t["symbols"][0]
        if kind == "array":
            if ref == "unit":
                return [ctx.unit, ctx.other_unit]
            if ref == "township":
                return [ctx.township]
            return [_value(t["items"], {}, ctx)]
        if kind == "map":
            return {}
        logical = t.get("logicalType")
        if logical == "date":
            return ctx.date
        if logical in ("timestamp-millis", "timestamp-micros"):
            return ctx.timestamp
        return _value(kind, f, ctx)
    if t == "string":
        if ref == "township":
            return ctx.township
        if ref == "unit":
            return ctx.other_unit
        return f"{_TEXT_ZH}{f.get('name', '')}"
    if t == "boolean":
        return False
    if t in ("int", "long"):
        return 1
    if t in ("float", "double"):
        return 1.0
    return None
