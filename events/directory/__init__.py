"""The directory of units that publish events: townships, enforcement offices, agencies, departments.

The roster is data (`units.json`), not code: districts edit it without a release. Each unit says
which townships it covers (`jurisdiction`) and which event types it may publish (`publishes`,
patterns over `area.event` such as `case.*` or `dispute.raised`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.envelope import TYPE_PREFIX

DEFAULT_PATH = Path(__file__).parent / "units.json"
UNIT_KINDS = ("enforcement_office", "dispatched_agency", "department", "supervision")


@dataclass(frozen=True, slots=True)
class Township:
    code: str
    kind: str
    name_zh: str
    name_en: str


@dataclass(frozen=True, slots=True)
class Unit:
    id: str
    kind: str
    name_zh: str
    name_en: str
    home_township: str | None
    jurisdiction: frozenset[str]
    publishes: tuple[str, ...]
    officers: int | None = None

    def may_publish(self, event_type: str) -> bool:
        """`cn.gov.liandong.case.filed.v1` is matched as `case.filed` against the unit's patterns."""
        area_event = event_type.removeprefix(TYPE_PREFIX).rsplit(".", 1)[0]
        area = area_event.split(".", 1)[0]
        return any(p == area_event or p == f"{area}.*" for p in self.publishes)

    def covers(self, township: str) -> bool:
        return township in self.jurisdiction

    def as_record(self) -> dict[str, Any]:
        """The unit as the data of a `directory.unit_published` event."""
        return {
            "kind": self.kind,
            "name_zh": self.name_zh,
            "name_en": self.name_en,
            "home_township": self.home_township,
            "jurisdiction": sorted(self.jurisdiction),
            "publishes": list(self.publishes),
            "officers": self.officers,
        }

    def content_hash(self) -> str:
        text = json.dumps(self.as_record(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class DirectoryError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Directory:
    units: Mapping[str, Unit]
    townships: Mapping[str, Township]

    @classmethod
    def load(cls, path: Path = DEFAULT_PATH) -> Directory:
        doc = json.loads(path.read_text(encoding="utf-8"))
        townships = {t["code"]: Township(**t) for t in doc["townships"]}
        units: dict[str, Unit] = {}
        for raw in doc["units"]:
            unit = Unit(
                id=raw["id"],
                kind=raw["kind"],
                name_zh=raw["name_zh"],
                name_en=raw["name_en"],
                home_township=raw.get("home_township"),
                jurisdiction=frozenset(raw.get("jurisdiction", [])),
                publishes=tuple(raw.get("publishes", [])),
                officers=raw.get("officers"),
            )
            _check(unit, townships, units)
            units[unit.id] = unit
        return cls(units=units, townships=townships)

    def knows(self, ref_kind: str, value: str) -> bool:
        if ref_kind == "unit":
            return value in self.units
        if ref_kind == "township":
            return value in self.townships
        return False

    @property
    def officers(self) -> int:
        return sum(u.officers or 0 for u in self.units.values())


def _check(unit: Unit, townships: Mapping[str, Township], seen: Mapping[str, Unit]) -> None:
    where = f"units.json: unit {unit.id!r}"
    if unit.id in seen:
        raise DirectoryError(f"{where} appears twice")
    if unit.kind not in UNIT_KINDS:
        raise DirectoryError(f"{where} has unknown kind {unit.kind!r}")
    unknown = sorted(t for t in unit.jurisdiction | {unit.home_township or ""} if t and t not in townships)
    if unknown:
        raise DirectoryError(f"{where} names unknown townships {unknown}")
    if unit.officers is not None and unit.officers < 0:
        raise DirectoryError(f"{where} has a negative officer count")
