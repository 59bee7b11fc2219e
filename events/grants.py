"""Who may say what: the directory's publishing grants, as pure rules shared by every entry point.

One implementation, used by:
- the HTTP gateway (`connectors/http_gateway/ingest.py`), where the publisher is the key's unit;
- the SDK (`connectors/sdk/`), where the publisher is the client's unit;
- the spreadsheet importer, for every row;
- the worker (`projections/runtime.py`, an injected gate), for records read from the broker,
  which may have bypassed all of the above.

A grant is what `events/directory/units.json` says a unit may publish: the types matched by its
`publishes` patterns, about the townships of its `jurisdiction`. The hub itself publishes a few
types under its own source (`liandong.hub`), and the API publishes an alert acknowledgement as the
recipient unit once it has checked that unit received the alert: those are admitted only on the
log (`hub_issued=True`), never through the gateway, where no key is the hub.

What needs the database stays out: an event that names no township, about a case or matter in a
township the unit does not cover, is refused by the gateway's scope check (`services/api/scope.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from events.catalog import Catalog
from events.directory import Directory, Unit
from events.envelope import Envelope

HUB_SOURCE = "liandong.hub"
# `area.event` patterns, read as a unit's `publishes` are. Published by the directory sync
# (`directory.*`), the clock scanner (`alert.raised`, `alert.withdrawn`) and the anomaly announcer
# (`anomaly.*`, `alert.withdrawn`).
HUB_PUBLISHES = ("directory.*", "alert.raised", "alert.withdrawn", "anomaly.*")
# Published by the API as the authenticated unit after a check against the store (the unit is a
# recipient of the alert); `data.by_unit` must name that same unit.
RECIPIENT_PUBLISHES = ("alert.acknowledged",)

Reason = Literal["forged_source", "unknown_source", "type_not_permitted", "township_not_permitted"]
REASONS: tuple[Reason, ...] = (
    "forged_source",
    "unknown_source",
    "type_not_permitted",
    "township_not_permitted",
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an event may not be published as it is: a bounded reason, the field, and a detail."""

    reason: Reason
    field: str
    detail: str


def township_fields(schema: Mapping[str, Any]) -> list[str]:
    """Top-level fields that name one township (`liandong.ref: township`, a single string)."""
    return [
        f["name"]
        for f in schema.get("fields", [])
        if f.get("liandong.ref") == "township" and f["type"] in ("string", ["null", "string"])
    ]


def source_refusal(source: str, directory: Directory, publisher: str) -> Refusal | None:
    """The publisher (a key's or a client's unit) may publish only as itself."""
    if source == publisher:
        return None
    known = "a unit" if source in directory.units else "not a registered unit"
    return Refusal(
        "forged_source", "source", f"'{source}' is {known}; this key publishes only as '{publisher}'"
    )


def type_refusal(unit: Unit, event_type: str) -> Refusal | None:
    if unit.may_publish(event_type):
        return None
    return Refusal("type_not_permitted", "type", f"unit '{unit.id}' may not publish '{event_type}'")


def township_refusal(unit: Unit, fields: list[str], data: Mapping[str, Any]) -> Refusal | None:
    """`fields` from `township_fields(schema)`; `data` as validated (Avro-ready) values."""
    for name in fields:
        township = data.get(name)
        if isinstance(township, str) and not unit.covers(township):
            return Refusal(
                "township_not_permitted",
                f"data.{name}",
                f"unit '{unit.id}' does not cover township '{township}'",
            )
    return None


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What (source, type) alone decides; the data is looked at only where it must be."""

    refusal: Refusal | None
    unit: Unit | None = None  # set when the townships in the data must be covered by this unit
    townships: tuple[str, ...] = ()
    acknowledgement: bool = False  # `data.by_unit` must be the source


_MAX_VERDICTS = 10_000  # sources x types of a real directory is a few thousand; forged ones are not kept


class Grants:
    """All the rules for one decoded event. What a (source, type) pair decides is remembered, so
    the worker's hot path costs a dictionary lookup and, for types naming a township, a set lookup.

    `hub_issued=True` on the log: also admit what the hub itself publishes (see the module doc).
    """

    def __init__(self, directory: Directory, catalog: Catalog, *, hub_issued: bool = False) -> None:
        self._directory = directory
        self._catalog = catalog
        self._hub_issued = hub_issued
        self._verdicts: dict[tuple[str, str], _Verdict] = {}
        # The hub, and "any recipient", as units of their own: their grants follow the directory's
        # pattern rule (`Unit.may_publish`) rather than a second copy of it.
        self._hub = Unit(
            id=HUB_SOURCE,
            kind="supervision",
            name_zh="联动平台",
            name_en="Liandong hub",
            home_township=None,
            jurisdiction=frozenset(directory.townships),
            publishes=HUB_PUBLISHES,
        )
        self._recipient = Unit(
            id="",
            kind="supervision",
            name_zh="",
            name_en="",
            home_township=None,
            jurisdiction=frozenset(),
            publishes=RECIPIENT_PUBLISHES,
        )

    @classmethod
    def load(cls, *, hub_issued: bool = False) -> Grants:
        return cls(Directory.load(), Catalog.load(), hub_issued=hub_issued)

    @property
    def directory(self) -> Directory:
        return self._directory

    def check(self, event: Envelope, publisher: str | None = None) -> Refusal | None:
        """None if `event` may be published; `publisher` is the authenticated unit, when there is one
        (the gateway's key, the SDK's client, the importer's `--source`)."""
        if publisher is not None:
            forged = source_refusal(event.source, self._directory, publisher)
            if forged is not None:
                return forged
        key = (event.source, event.type)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._decide(event.source, event.type)
            if len(self._verdicts) < _MAX_VERDICTS:
                self._verdicts[key] = verdict
        if verdict.refusal is not None:
            return verdict.refusal
        if verdict.acknowledgement:
            by_unit = event.data.get("by_unit")
            if by_unit != event.source:
                detail = f"'{by_unit}' acknowledged, but the source is '{event.source}'"
                return Refusal("forged_source", "data.by_unit", detail)
            return None
        if verdict.unit is not None and verdict.townships:
            return township_refusal(verdict.unit, list(verdict.townships), event.data)
        return None

    def __call__(self, event: Envelope) -> Refusal | None:
        """The worker's gate: no publisher is known on the log."""
        return self.check(event)

    def _decide(self, source: str, event_type: str) -> _Verdict:
        if self._hub_issued and source == HUB_SOURCE:
            return _Verdict(type_refusal(self._hub, event_type))
        unit = self._directory.units.get(source)
        if unit is None:
            return _Verdict(Refusal("unknown_source", "source", f"'{source}' is not a registered unit"))
        if self._hub_issued and self._recipient.may_publish(event_type):
            return _Verdict(None, acknowledgement=True)
        refused = type_refusal(unit, event_type)
        if refused is not None:
            return _Verdict(refused)
        kind = self._catalog.kinds.get(event_type)
        townships = tuple(township_fields(kind.latest)) if kind is not None else ()
        return _Verdict(None, unit, townships)
