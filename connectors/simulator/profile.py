"""The simulator's assumptions (`profile.json`), loaded once and read through typed accessors.

The rates are data so that a district can recalibrate the traffic without a code change; the
lifecycle logic that uses them lives in `cases.py` and `matters.py`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import time
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).with_name("profile.json")
GATEWAY, SDK, SPREADSHEET = "gateway", "sdk", "spreadsheet"
CHANNELS = (GATEWAY, SDK, SPREADSHEET)
SPREADSHEET_TYPE = "case.filed.v1"


@dataclass(frozen=True, slots=True)
class Category:
    code: str
    share: float
    title_zh: str
    fine_fen: tuple[int, int]
    major: float
    department: str


@dataclass(frozen=True, slots=True)
class Profile:
    raw: Mapping[str, Any]
    categories: Mapping[str, Category]
    _channels: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, path: Path = DEFAULT_PATH) -> Profile:
        raw = json.loads(path.read_text(encoding="utf-8"))
        categories = {
            code: Category(
                code=code,
                share=float(c["share"]),
                title_zh=str(c["title_zh"]),
                fine_fen=(int(c["fine_fen"][0]), int(c["fine_fen"][1])),
                major=float(c["major"]),
                department=str(c["department"]),
            )
            for code, c in raw["categories"].items()
        }
        return cls(raw=raw, categories=categories)

    def rate(self, section: str, key: str) -> float:
        return float(self.raw[section][key])

    def span(self, section: str, key: str) -> tuple[int, int]:
        low, high = self.raw[section][key]
        return int(low), int(high)

    def weights(self, section: str, key: str) -> dict[str, float]:
        return {k: float(v) for k, v in self.raw[section][key].items()}

    def target(self, key: str) -> int:
        return int(self.raw["targets"][key])

    @property
    def departments(self) -> Mapping[str, Mapping[str, Any]]:
        departments: Mapping[str, Mapping[str, Any]] = self.raw["case_filers"]["departments"]
        return departments

    @property
    def monthly_weight(self) -> tuple[float, ...]:
        return tuple(float(w) for w in self.raw["monthly_weight"])

    @property
    def spreadsheet_units(self) -> frozenset[str]:
        return frozenset(self.raw["channels"]["spreadsheet"])

    @property
    def upload_weekday(self) -> int:
        return int(self.raw["channels"]["spreadsheet_upload"]["weekday"])

    @property
    def upload_time(self) -> time:
        return time.fromisoformat(self.raw["channels"]["spreadsheet_upload"]["time"])

    def channel_for(self, unit: str, short_type: str) -> str:
        """How `unit` publishes `short_type`: its filings by spreadsheet, or its whole traffic by SDK."""
        key = (unit, short_type)
        known = self._channels.get(key)
        if known is None:
            known = self._channels[key] = self._channel_for(unit, short_type)
        return known

    def uses_gateway(self, unit: str) -> bool:
        """Whether the unit sends anything through the gateway, so needs a key."""
        return self.channel_for(unit, "case.closed.v1") == GATEWAY

    def _channel_for(self, unit: str, short_type: str) -> str:
        if unit in self.spreadsheet_units:
            return SPREADSHEET if short_type == SPREADSHEET_TYPE else GATEWAY
        if any(fnmatchcase(unit, pattern) for pattern in self.raw["channels"]["sdk"]):
            return SDK
        return GATEWAY
