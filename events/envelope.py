"""The common envelope of every Liandong event (CloudEvents 1.0 context attributes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SPECVERSION = "1.0"
TYPE_PREFIX = "cn.gov.liandong."


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
        return self.type.removeprefix(TYPE_PREFIX)

    @property
    def area(self) -> str:
        """`case` for `cn.gov.liandong.case.filed.v1`."""
        return self.short_type.split(".", 1)[0]

    @property
    def event_name(self) -> str:
        """`filed` for `cn.gov.liandong.case.filed.v1`."""
        parts = self.short_type.split(".")
        return parts[1] if len(parts) == 3 else self.short_type
