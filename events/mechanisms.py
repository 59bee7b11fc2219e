"""The lifecycle of every area, as data (`mechanisms.json`): which events open and close a loop,
which units take part, and which events must come before which."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from events.envelope import TYPE_PREFIX

DEFAULT_PATH = Path(__file__).parent / "mechanisms.json"


@dataclass(frozen=True, slots=True)
class Step:
    area: str
    event: str
    label_zh: str
    label_en: str
    opens: bool = False
    closes: bool = False
    reopens: bool = False
    parties: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    requires_if_major: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Area:
    name: str
    name_zh: str
    name_en: str
    matter: bool
    steps: Mapping[str, Step]


@dataclass(frozen=True, slots=True)
class Mechanisms:
    areas: Mapping[str, Area]

    @classmethod
    def load(cls, path: Path = DEFAULT_PATH) -> Mechanisms:
        doc = json.loads(path.read_text(encoding="utf-8"))
        areas: dict[str, Area] = {}
        for name, raw in doc["areas"].items():
            steps = {
                event: Step(
                    area=name,
                    event=event,
                    label_zh=s["label_zh"],
                    label_en=s["label_en"],
                    opens=s.get("opens", False),
                    closes=s.get("closes", False),
                    reopens=s.get("reopens", False),
                    parties=tuple(s.get("parties", ())),
                    requires=tuple(s.get("requires", ())),
                    requires_if_major=tuple(s.get("requires_if_major", ())),
                )
                for event, s in raw["events"].items()
            }
            for step in steps.values():
                missing = [r for r in (*step.requires, *step.requires_if_major) if r not in steps]
                if missing:
                    raise ValueError(f"mechanisms.json: {name}.{step.event} requires unknown {missing}")
            areas[name] = Area(name, raw["name_zh"], raw["name_en"], raw["matter"], steps)
        return cls(areas)

    def step(self, event_type: str) -> Step | None:
        """The step of a full type name such as `cn.gov.liandong.transfer.requested.v1`."""
        parts = event_type.removeprefix(TYPE_PREFIX).split(".")
        if len(parts) != 3:
            return None
        area = self.areas.get(parts[0])
        return None if area is None else area.steps.get(parts[1])
