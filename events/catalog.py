"""The event catalog: every event type, its schema revisions and its topic.

Schemas live in `events/schemas/<short type>/<revision>.avsc`. A short type such as
`case.filed.v1` names the family (`case`), the fact (`filed`) and the major version (`v1`).
Revisions within one major version must stay BACKWARD_TRANSITIVE compatible; a breaking change
is a new major version with an upcaster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.envelope import TYPE_PREFIX

SCHEMA_ROOT = Path(__file__).parent / "schemas"
# The schema attribute that marks a field as a party's personal data, and the kinds it may name.
PII_ATTRIBUTE = "liandong.pii"
PII_KINDS = ("name", "id_number", "phone", "address")


@dataclass(frozen=True, slots=True)
class EventKind:
    """One event type with all its schema revisions, oldest first."""

    type: str
    revisions: tuple[Mapping[str, Any], ...]

    @property
    def short_type(self) -> str:
        return self.type.removeprefix(TYPE_PREFIX)

    @property
    def family(self) -> str:
        return self.short_type.split(".", 1)[0]

    @property
    def latest(self) -> Mapping[str, Any]:
        return self.revisions[-1]

    @property
    def subject(self) -> str:
        """Registry subject: one per event type, independent of the topic."""
        return self.type

    @property
    def pii_fields(self) -> Mapping[str, str]:
        """Fields of the latest revision that hold a party's personal data, by the kind the schema
        gives them (`"liandong.pii": name | id_number | phone | address`); old revisions are read as
        the latest, so its annotations cover every record."""
        return {f["name"]: f[PII_ATTRIBUTE] for f in self.latest.get("fields", ()) if PII_ATTRIBUTE in f}


class UnknownEventType(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Catalog:
    kinds: Mapping[str, EventKind]

    @classmethod
    def load(cls, root: Path = SCHEMA_ROOT) -> Catalog:
        kinds: dict[str, EventKind] = {}
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            files = sorted(folder.glob("*.avsc"), key=lambda p: int(p.stem))
            if not files:
                continue
            revisions = tuple(json.loads(f.read_text(encoding="utf-8")) for f in files)
            event_type = TYPE_PREFIX + folder.name
            kinds[event_type] = EventKind(type=event_type, revisions=revisions)
        return cls(kinds=kinds)

    def get(self, event_type: str) -> EventKind:
        try:
            return self.kinds[event_type]
        except KeyError:
            raise UnknownEventType(event_type) from None

    def __iter__(self) -> Iterator[EventKind]:
        return iter(self.kinds.values())

    @property
    def families(self) -> frozenset[str]:
        return frozenset(k.family for k in self.kinds.values())


def topic_for(family: str, prefix: str = "liandong") -> str:
    """All events of one family share a topic, keyed by subject, so a subject's events stay ordered."""
    return f"{prefix}.{family}.events"
