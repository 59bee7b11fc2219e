"""The common envelope of every Liandong event (CloudEvents 1.0 context attributes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SPECVERSION = "1.0"
TYPE_PREFIX = "cn.gov.liandong."

# type -> (short type, area, event name). Every projection asks each event for its area and name,
# several times per batch; the catalog has under a hundred types, so the split is done once per
# type. The bound only guards against a stream of made-up types.
_PARTS: dict[str, tuple[str, str, str]] = {}
_PARTS_MAX = 4096


def _parts(event_type: str) -> tuple[str, str, str]:
    parts = _PARTS.get(event_type)
    if parts is None:
        short = event_type.removeprefix(TYPE_PREFIX)
        pieces = short.split(".")
        parts = (short, pieces[0], pieces[1] if len(pieces) == 3 else short)
        if len(_PARTS) < _PARTS_MAX:
            _PARTS[event_type] = parts
    return parts


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event: an immutable fact, named in the past tense, with its schema version in `type`.

    `source` is the publishing unit's directory id; `subject` is the case or request id.
    `data` holds Avro-ready values (datetimes, ints, strings) checked against the type's schema.
    """

    id: str
    type: str
    source: str
    subject: str
    time: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    specversion: str = SPECVERSION

    @property
    def short_type(self) -> str:
        """`case.filed.v1` for `cn.gov.liandong.case.filed.v1`."""
        return _parts(self.type)[0]

    @property
    def area(self) -> str:
        """`case` for `cn.gov.liandong.case.filed.v1`."""
        return _parts(self.type)[1]

    @property
    def event_name(self) -> str:
        """`filed` for `cn.gov.liandong.case.filed.v1`."""
        return _parts(self.type)[2]
