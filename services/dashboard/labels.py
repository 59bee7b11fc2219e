"""Chinese and English names the dashboard shows beside codes, built from the hub's own data files
and the names the query API groups by (services/api/labels.py).

The pages read them once from /dashboard/labels.json, so that a renamed unit or a new clock rule
needs no change to the scripts.
"""

from __future__ import annotations

from typing import Any

from events.clock_rules import ClockRules
from events.directory import Directory
from events.mechanisms import Mechanisms
from projections.case_registry import STAGE_RANKS
from services.api.labels import ANOMALY_KINDS_ZH, STAGES_ZH, categories_zh

STAGES_EN: dict[str, str] = {
    "lead": "Lead",
    "filed": "Filed",
    "investigating": "Investigating",
    "legal_review": "Legal review",
    "notified": "Notified",
    "decided": "Decided",
    "served": "Served",
    "executing": "Executing",
    "closed": "Closed",
    "archived": "Archived",
}

LEVELS: dict[str, tuple[str, str]] = {
    "yellow": ("黄色预警", "Yellow"),
    "red": ("红色预警", "Red"),
    "escalated": ("已升级", "Escalated"),
    "re_escalated": ("再次升级", "Re-escalated"),
    "risk": ("风险预警", "Risk"),
}

ROLES: dict[str, tuple[str, str]] = {
    "district": ("区级督办", "District"),
    "township": ("镇街", "Township"),
    "unit": ("单位", "Unit"),
    "auditor": ("审计", "Auditor"),
    "public": ("公众", "Public"),
}


def _pair(zh: str, en: str) -> dict[str, str]:
    return {"zh": zh, "en": en}


def build_labels() -> dict[str, Any]:
    """Every name the pages need, keyed by code; loaded from the same files the hub runs on."""
    mechanisms = Mechanisms.load()
    directory = Directory.load()
    rules = ClockRules.load()
    return {
        "areas": {
            name: {**_pair(a.name_zh, a.name_en), "matter": a.matter} for name, a in mechanisms.areas.items()
        },
        "events": {
            f"{name}.{event}": _pair(step.label_zh, step.label_en)
            for name, area in mechanisms.areas.items()
            for event, step in area.steps.items()
        },
        "rules": {rid: _pair(r.name_zh, r.name_en) for rid, r in rules.rules.items()},
        "units": {uid: _pair(u.name_zh, u.name_en) for uid, u in directory.units.items()},
        "townships": {code: _pair(t.name_zh, t.name_en) for code, t in directory.townships.items()},
        "categories": {code: _pair(zh, code.replace("_", " ")) for code, zh in categories_zh().items()},
        # In the registry's order, lead to archived, for the stage filter.
        "stages": {code: _pair(STAGES_ZH.get(code, code), STAGES_EN.get(code, code)) for code in STAGE_RANKS},
        "anomalies": {code: _pair(zh, code.replace("_", " ")) for code, zh in ANOMALY_KINDS_ZH.items()},
        "levels": {code: _pair(*names) for code, names in LEVELS.items()},
        "roles": {code: _pair(*names) for code, names in ROLES.items()},
    }
