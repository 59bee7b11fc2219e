"""Render the catalog as Markdown (docs/events.md). Pure: the caller writes the file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from events.catalog import Catalog
from events.mechanisms import Mechanisms
from events.samples import SampleContext, sample_data
from events.upcasters import UPCASTERS

HEADER = """# Event catalog

Generated from `events/schemas/` and `events/mechanisms.json` by `liandong catalog docs`. Do not edit
by hand: `tests/unit/test_catalog_docs.py` fails when this file is stale.

Every event travels in the same envelope (CloudEvents 1.0): `id` (UUID), `source` (the publishing
unit), `type` (`cn.gov.liandong.<area>.<event>.v<N>`), `subject` (the case id, or the mechanism's own
id), `time` (when the fact occurred). The tables list the fields of `data`. **PII** marks personal
data of parties, which later issues mask for readers who are not entitled to it.
"""


def _type_name(t: Any) -> str:
    if isinstance(t, list):
        inner = [_type_name(b) for b in t if b != "null"]
        return " \\| ".join(inner) + (" (optional)" if "null" in t else "")
    if isinstance(t, dict):
        kind = t["type"]
        if kind == "enum":
            return "enum: " + ", ".join(f"`{s}`" for s in t["symbols"])
        if kind == "array":
            return f"array of {_type_name(t['items'])}"
        if kind == "record":
            return f"record {t['name']}"
        return str(t.get("logicalType", kind))
    return str(t)


def _rows(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    rows = []
    for f in schema["fields"]:
        marks = []
        if "liandong.pii" in f:
            marks.append(f"PII ({f['liandong.pii']})")
        if "liandong.ref" in f:
            marks.append(f"→ {f['liandong.ref']}")
        required = "" if "default" in f else "yes"
        doc = str(f.get("doc", "")).replace("|", "\\|").replace("\n", " ")
        rows.append(
            f"| `{prefix}{f['name']}` | {_type_name(f['type'])} | {required} | {' '.join(marks)} | {doc} |"
        )
        nested = f["type"]
        items = nested.get("items") if isinstance(nested, dict) and nested.get("type") == "array" else None
        if isinstance(items, dict) and items.get("type") == "record":
            rows += _rows(items, f"{prefix}{f['name']}[].")
    return rows


def render(catalog: Catalog, mechanisms: Mechanisms) -> str:
    upcast_to = {u.source: u.target for u in UPCASTERS}
    parts = [HEADER]
    by_area: dict[str, list[Any]] = {}
    for kind in catalog:
        by_area.setdefault(kind.family, []).append(kind)
    parts.append("## Areas\n")
    parts.append("| area | 中文 | English | types |\n|---|---|---|---|")
    for area in sorted(by_area):
        info = mechanisms.areas.get(area)
        zh, en = (info.name_zh, info.name_en) if info else ("", "")
        parts.append(f"| [`{area}`](#{area}) | {zh} | {en} | {len(by_area[area])} |")
    parts.append("")
    for area in sorted(by_area):
        info = mechanisms.areas.get(area)
        title = f"{info.name_zh} {info.name_en}" if info else area
        parts.append(f"## {area}\n\n{title}\n")
        for kind in sorted(by_area[area], key=lambda k: k.type):
            schema = kind.latest
            step = mechanisms.step(kind.type)
            parts.append(f"### `{kind.type}`\n")
            parts.append(str(schema.get("doc", "")) + "\n")
            facts = [f"revisions: {len(kind.revisions)}"]
            if "liandong.basis" in schema:
                facts.append(f"basis: {schema['liandong.basis']}")
            if step is not None:
                loop = [
                    w
                    for w, on in (("opens", step.opens), ("closes", step.closes), ("reopens", step.reopens))
                    if on
                ]
                if loop:
                    facts.append("loop: " + ", ".join(loop))
                if step.requires:
                    facts.append("expects earlier: " + " or ".join(step.requires))
                if step.requires_if_major:
                    facts.append("major cases expect earlier: " + " or ".join(step.requires_if_major))
            if kind.type in upcast_to:
                facts.append(f"read as `{upcast_to[kind.type]}` (upcast)")
            parts.append("".join(f"- {fact}\n" for fact in facts))
            parts.append("| field | type | required | marks | meaning |\n|---|---|---|---|---|")
            parts += _rows(schema)
            example = json.dumps(sample_data(schema, SampleContext(full=False)), ensure_ascii=False)
            parts.append(f"\nMinimal `data`: `{example}`\n")
    return "\n".join(parts).rstrip() + "\n"
