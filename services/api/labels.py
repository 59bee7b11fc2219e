"""Chinese and English names of the codes the query API groups by: stages, categories, anomaly kinds,
clock rules, mechanisms, townships and units."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache

from connectors.simulator.profile import DEFAULT_PATH as SIMULATOR_PROFILE
from connectors.spreadsheet.mapping import DEFAULT_MAPPING as SPREADSHEET_MAPPING
from events.clock_rules import ClockRules
from events.directory import Directory
from events.mechanisms import Mechanisms

UNKNOWN_ZH = "未知"

STAGES_ZH: Mapping[str, str] = {
    "lead": "线索",
    "filed": "立案",
    "investigating": "调查取证",
    "legal_review": "法制审核",
    "notified": "事先告知",
    "decided": "作出决定",
    "served": "决定送达",
    "executing": "执行",
    "closed": "结案",
    "archived": "归档",
}

ANOMALY_KINDS_ZH: Mapping[str, str] = {
    "out_of_order": "数据顺序异常",
    "legal_review_missing": "重大案件未经法制审核",
    "repeat_inspection": "30日内多部门重复检查",
    "case_flow_spike": "案件量异常激增",
    "case_flow_silence": "案件量异常沉寂",
}


@cache
def clock_rules() -> ClockRules:
    # Read once, on first use: the files are package data and never change while the process runs.
    return ClockRules.load()


@cache
def mechanisms() -> Mechanisms:
    return Mechanisms.load()


@cache
def categories_zh() -> Mapping[str, str]:
    """Case categories are free codes; the import mapping's short names win over the simulator's."""
    names: dict[str, str] = {}
    profile = json.loads(SIMULATOR_PROFILE.read_text(encoding="utf-8"))
    for code, raw in profile.get("categories", {}).items():
        names[code] = raw["title_zh"]
    mapping = json.loads(SPREADSHEET_MAPPING.read_text(encoding="utf-8"))
    for zh, code in mapping.get("categories", {}).items():
        names[code] = zh
    return names


def duty_rules() -> tuple[str, ...]:
    """Rules a unit must act on and a closing event stops."""
    return tuple(r.id for r in clock_rules().rules.values() if r.kind == "duty")


def check_rules() -> tuple[str, ...]:
    """Rules measured once, at their start, against a date the start event carries."""
    return tuple(r.id for r in clock_rules().rules.values() if r.kind == "check")


def name_zh(directory: Directory, group_by: str, code: str | None) -> str:
    """The Chinese name of a group's code; the code itself when it has none."""
    if code is None:
        return UNKNOWN_ZH
    if group_by == "township":
        township = directory.townships.get(code)
        return township.name_zh if township else code
    if group_by == "unit":
        unit = directory.units.get(code)
        return unit.name_zh if unit else code
    if group_by == "category":
        return categories_zh().get(code, code)
    if group_by == "rule":
        rule = clock_rules().rules.get(code)
        return rule.name_zh if rule else code
    if group_by == "area":
        area = mechanisms().areas.get(code)
        return area.name_zh if area else code
    if group_by == "stage":
        return STAGES_ZH.get(code, code)
    if group_by == "kind":
        return ANOMALY_KINDS_ZH.get(code, code)
    return code
