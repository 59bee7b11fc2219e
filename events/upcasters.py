"""Upcasters: old major versions of an event become the current one on read.

Revisions within a major version are resolved by Avro itself (schema resolution). A new major
version is a breaking change, so each one ships a pure function from the old data to the new.
Readers (projections) only ever see the newest major version; the log keeps what was written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from events.envelope import TYPE_PREFIX

Convert = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Upcaster:
    source: str
    target: str
    convert: Convert


# v1 recorded penalty kinds as free text; v2 has an enum. Known spellings map to it.
_PENALTY_KINDS = {
    "warning": "warning",
    "警告": "warning",
    "fine": "fine",
    "罚款": "fine",
    "confiscation": "confiscation_of_illegal_gains",
    "confiscation_of_illegal_gains": "confiscation_of_illegal_gains",
    "没收违法所得": "confiscation_of_illegal_gains",
    "confiscation_of_illegal_property": "confiscation_of_illegal_property",
    "没收非法财物": "confiscation_of_illegal_property",
    "suspension_of_licence": "suspension_of_licence",
    "暂扣许可证件": "suspension_of_licence",
    "revocation_of_licence": "revocation_of_licence",
    "吊销许可证件": "revocation_of_licence",
    "restriction_of_business": "restriction_of_business",
    "限制开展生产经营活动": "restriction_of_business",
    "order_to_close": "order_to_close",
    "责令关闭": "order_to_close",
}


def case_decided_v1_to_v2(data: Mapping[str, Any]) -> dict[str, Any]:
    """v1 had `penalty_kinds` (text) and one `fine_amount_fen`; v2 lists structured penalties.

    The fine amount goes to the fine penalty. A fine amount without a fine kind still becomes a
    fine. `legal_review_completed` was a self-reported flag; v2 relies on the review events, so
    it is not carried over, and `legal_review_id` is unknown for v1 decisions.
    """
    fine = data.get("fine_amount_fen")
    penalties: list[dict[str, Any]] = []
    for text in data.get("penalty_kinds") or []:
        kind = _PENALTY_KINDS.get(str(text).strip().lower(), "other")
        penalties.append(
            {
                "kind": kind,
                "amount_fen": fine if kind == "fine" else None,
                "detail": None if kind != "other" else str(text),
            }
        )
    if fine is not None and not any(p["kind"] == "fine" for p in penalties):
        penalties.append({"kind": "fine", "amount_fen": fine, "detail": None})
    return {
        "outcome": data["outcome"],
        "penalties": penalties,
        "decision_number": data.get("decision_number"),
        "major_case": False,
        "legal_review_id": None,
    }


UPCASTERS: tuple[Upcaster, ...] = (
    Upcaster(TYPE_PREFIX + "case.decided.v1", TYPE_PREFIX + "case.decided.v2", case_decided_v1_to_v2),
)


def upcast(
    event_type: str, data: Mapping[str, Any], chain: Mapping[str, Upcaster] | None = None
) -> tuple[str, Mapping[str, Any]]:
    """Follow the chain of upcasters from `event_type` to the newest major version."""
    steps = {u.source: u for u in UPCASTERS} if chain is None else chain
    seen = {event_type}
    while event_type in steps:
        step = steps[event_type]
        event_type, data = step.target, step.convert(data)
        if event_type in seen:
            raise ValueError(f"upcaster cycle at {event_type}")
        seen.add(event_type)
    return event_type, data
