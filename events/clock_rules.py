"""Clock rules as versioned data (`clocks.json`): what starts, stops, resets and extends each legal
or local time limit, how long it is, on which calendar, and on what basis."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.envelope import Envelope

DEFAULT_PATH = Path(__file__).parent / "clocks.json"
KINDS = ("duty", "window", "check", "notice")
UNITS = ("working_days", "calendar_days", "hours", "months")


@dataclass(frozen=True, slots=True)
class Trigger:
    event: str
    when: Mapping[str, tuple[Any, ...]]

    def matches(self, event: Envelope) -> bool:
        if event.event_name != self.event:
            return False
        return all(event.data.get(name) in allowed for name, allowed in self.when.items())


@dataclass(frozen=True, slots=True)
class ClockRule:
    id: str
    version: int
    name_zh: str
    name_en: str
    area: str
    kind: str
    start: tuple[Trigger, ...]
    stop: tuple[Trigger, ...]
    reset: tuple[Trigger, ...]
    extend: tuple[Trigger, ...]
    pause: tuple[Trigger, ...]
    resume: tuple[Trigger, ...]
    length: int
    unit: str
    citation: str
    responsible_field: str | None = None
    deadline_field: str | None = None
    extend_field: str | None = None
    from_field: str | None = None
    date_field: str | None = None
    per_party: str | None = None
    party_field: str | None = None

    @property
    def alerts(self) -> bool:
        """Windows are the party's time; they are tracked but never raise alerts."""
        return self.kind != "window"

    def role(self, event: Envelope) -> str | None:
        """What `event` does to this rule's clocks: start, stop, reset, extend, pause, resume, or nothing."""
        if event.area != self.area:
            return None
        for role, triggers in (
            ("start", self.start),
            ("stop", self.stop),
            ("reset", self.reset),
            ("extend", self.extend),
            ("pause", self.pause),
            ("resume", self.resume),
        ):
            if any(t.matches(event) for t in triggers):
                return role
        return None


@dataclass(frozen=True, slots=True)
class Ladder:
    yellow_fraction: float
    escalate_after_working_days: int
    supervisor: str


@dataclass(frozen=True, slots=True)
class ClockRules:
    version: int
    rules: Mapping[str, ClockRule]
    ladder: Ladder
    overrides: Mapping[tuple[str, str], int]
    # (area, event) -> rules it may trigger; built once, because every event of every batch asks.
    index: Mapping[tuple[str, str], tuple[ClockRule, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        built: dict[tuple[str, str], list[ClockRule]] = {}
        for rule in self.rules.values():
            triggers = (*rule.start, *rule.stop, *rule.reset, *rule.extend, *rule.pause, *rule.resume)
            for name in {t.event for t in triggers}:
                built.setdefault((rule.area, name), []).append(rule)
        object.__setattr__(self, "index", {key: tuple(rules) for key, rules in built.items()})

    @classmethod
    def load(cls, path: Path = DEFAULT_PATH) -> ClockRules:
        doc = json.loads(path.read_text(encoding="utf-8"))
        rules = {}
        for raw in doc["rules"]:
            rule = _rule(raw)
            if rule.id in rules:
                raise ValueError(f"clocks.json: rule {rule.id} appears twice")
            rules[rule.id] = rule
        overrides = {}
        for o in doc.get("overrides", []):
            if o["rule"] not in rules:
                raise ValueError(f"clocks.json: override names unknown rule {o['rule']}")
            overrides[(o["rule"], o["unit"])] = int(o["length"])
        ladder = Ladder(**doc["ladder"])
        if not 0 < ladder.yellow_fraction < 1:
            raise ValueError("clocks.json: ladder.yellow_fraction must be between 0 and 1")
        return cls(version=int(doc["version"]), rules=rules, ladder=ladder, overrides=overrides)

    def length(self, rule: ClockRule, unit_id: str | None) -> int:
        """The rule's length, or a unit's local override of it."""
        return self.overrides.get((rule.id, unit_id or ""), rule.length)

    def for_area(self, area: str) -> Sequence[ClockRule]:
        return [r for r in self.rules.values() if r.area == area]

    def for_event(self, area: str, event: str) -> Sequence[ClockRule]:
        """The rules any of whose triggers name `area.event`: the only ones an event can touch."""
        return self.index.get((area, event), ())


def _triggers(raw: list[Mapping[str, Any]] | None) -> tuple[Trigger, ...]:
    return tuple(
        Trigger(t["event"], {k: tuple(v) for k, v in (t.get("when") or {}).items()}) for t in raw or []
    )


def _rule(raw: Mapping[str, Any]) -> ClockRule:
    where = f"clocks.json: rule {raw.get('id')!r}"
    if raw["kind"] not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}")
    if raw["unit"] not in UNITS:
        raise ValueError(f"{where}: unit must be one of {UNITS}")
    if raw["kind"] == "check" and not raw.get("from_field"):
        raise ValueError(f"{where}: a check needs from_field")
    if raw["kind"] == "notice" and not raw.get("date_field"):
        raise ValueError(f"{where}: a notice rule needs date_field")
    if not raw.get("citation"):
        raise ValueError(f"{where}: every rule carries its citation")
    return ClockRule(
        id=raw["id"],
        version=int(raw["version"]),
        name_zh=raw["name_zh"],
        name_en=raw["name_en"],
        area=raw["area"],
        kind=raw["kind"],
        start=_triggers(raw["start"]),
        stop=_triggers(raw.get("stop")),
        reset=_triggers(raw.get("reset")),
        extend=_triggers(raw.get("extend")),
        pause=_triggers(raw.get("pause")),
        resume=_triggers(raw.get("resume")),
        length=int(raw["length"]),
        unit=raw["unit"],
        citation=raw["citation"],
        responsible_field=(raw.get("responsible") or {}).get("field"),
        deadline_field=raw.get("deadline_field"),
        extend_field=raw.get("extend_field"),
        from_field=raw.get("from_field"),
        date_field=raw.get("date_field"),
        per_party=raw.get("per_party"),
        party_field=raw.get("party_field"),
    )
