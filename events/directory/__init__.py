"""The directory of units that publish events: townships, enforcement offices, agencies, departments.

The roster is data (`units.json`), not code: districts edit it without a release.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATH = Path(__file__).parent / "units.json"


@dataclass(frozen=True, slots=True)
class Unit:
    id: str
    kind: str
    township: str | None
    name_zh: str
    name_en: str


@dataclass(frozen=True, slots=True)
class Township:
    code: str
    kind: str
    name_zh: str
    name_en: str


@dataclass(frozen=True, slots=True)
class Directory:
    units: dict[str, Unit]
    townships: dict[str, Township]

    @classmethod
    def load(cls, path: Path = DEFAULT_PATH) -> Directory:
        doc = json.loads(path.read_text(encoding="utf-8"))
        townships = {t["code"]: Township(**t) for t in doc["townships"]}
        units = {u["id"]: Unit(**u) for u in doc["units"]}
        for unit in units.values():
            if unit.township is not None and unit.township not in townships:
                raise ValueError(f"unit {unit.id} names unknown township {unit.township}")
        return cls(units=units, townships=townships)

    def knows(self, ref_kind: str, value: str) -> bool:
        if ref_kind == "unit":
            return value in self.units
        if ref_kind == "township":
            return value in self.townships
        return False
