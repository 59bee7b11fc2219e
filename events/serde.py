"""Kafka serde: CloudEvents binary mode headers, Confluent wire format values (0x00, id, Avro).

The codec registers the catalog's schemas once, then encodes and decodes without I/O.
On read, a record written with an older revision is resolved into the latest revision of its
major version (Avro schema resolution), and an older major version is upcast to the newest one.
Whatever bytes a record holds, decoding raises `DecodeError` and nothing else (fuzzed in
tests/fuzz/), and refuses what the store could not keep (`events/storable.py`), so that one such
record is dead-lettered instead of failing every batch it is in.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from events.catalog import Catalog, EventKind
from events.envelope import SPECVERSION, Envelope
from events.registry import SchemaRegistry
from events.storable import MAX_ID, MAX_SOURCE, MAX_SUBJECT, attribute_problem, data_problem
from events.upcasters import UPCASTERS, upcast

CONTENT_TYPE_AVRO = "application/avro"
_MAGIC = 0
_HEADER = struct.Struct(">bI")
_WIDTHS = (("ce_id", MAX_ID), ("ce_source", MAX_SOURCE), ("ce_subject", MAX_SUBJECT))

Headers = Sequence[tuple[str, bytes]]


class DecodeError(ValueError):
    """A record that cannot be turned into an event; the reason goes to the dead-letter headers."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _WriterSchema:
    kind: EventKind
    parsed: Any
    # None when the writer is the latest revision: nothing to resolve, and fastavro skips the
    # resolution step only when it is given no reader schema.
    reader: Any


@dataclass(frozen=True, slots=True)
class EncodedRecord:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class EventCodec:
    def __init__(self, catalog: Catalog, registry: SchemaRegistry) -> None:
        self._catalog = catalog
        self._registry = registry
        self._writers: dict[str, tuple[int, Any]] = {}
        self._readers: dict[int, _WriterSchema] = {}
        self._latest: dict[str, Any] = {}
        self._upcasters = {u.source: u for u in UPCASTERS if u.source in catalog.kinds}

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    async def prepare(self) -> None:
        """Register every revision so that any record this hub ever wrote can be read."""
        for kind in self._catalog:
            latest = parse_schema(dict(kind.latest))
            self._latest[kind.type] = latest
            for revision in kind.revisions:
                schema_id = await self._registry.register(kind.subject, revision)
                reader = None if revision is kind.latest else latest
                self._readers[schema_id] = _WriterSchema(kind, parse_schema(dict(revision)), reader)
            self._writers[kind.type] = (schema_id, latest)

    def encode(self, event: Envelope) -> EncodedRecord:
        schema_id, parsed = self._writers[event.type]
        buf = io.BytesIO()
        buf.write(_HEADER.pack(_MAGIC, schema_id))
        schemaless_writer(buf, parsed, dict(event.data))
        headers = [
            ("ce_specversion", SPECVERSION.encode()),
            ("ce_id", event.id.encode()),
            ("ce_source", event.source.encode()),
            ("ce_type", event.type.encode()),
            ("ce_subject", event.subject.encode()),
            ("ce_time", event.time.isoformat().encode()),
            ("content-type", CONTENT_TYPE_AVRO.encode()),
        ]
        return EncodedRecord(key=event.subject.encode(), value=buf.getvalue(), headers=headers)

    def decode(self, value: bytes | None, headers: Headers) -> Envelope:
        attrs = _header_map(headers)
        missing = [n for n in ("ce_id", "ce_type", "ce_source", "ce_subject", "ce_time") if n not in attrs]
        if missing:
            raise DecodeError("missing_header", ", ".join(missing))
        event_type = attrs["ce_type"]
        if event_type not in self._latest:
            raise DecodeError("unknown_type", event_type)
        if value is None or len(value) < _HEADER.size:
            raise DecodeError("bad_wire_format", "value shorter than the 5-byte header")
        magic, schema_id = _HEADER.unpack_from(value)
        if magic != _MAGIC:
            raise DecodeError("bad_wire_format", f"magic byte {magic}")
        writer = self._readers.get(schema_id)
        if writer is None:
            raise DecodeError("unknown_schema", str(schema_id))
        if writer.kind.type != event_type:
            raise DecodeError("schema_mismatch", f"schema {schema_id} is not for {event_type}")
        try:
            raw = schemaless_reader(io.BytesIO(value[_HEADER.size :]), writer.parsed, writer.reader)
            data: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
            occurred = datetime.fromisoformat(attrs["ce_time"]).astimezone(UTC)
        # OverflowError: a date or time beyond datetime's range, in the payload or in ce_time (found by
        # tests/fuzz/test_fuzz_decoder.py; it escaped and failed the whole batch).
        except (ValueError, EOFError, IndexError, TypeError, OverflowError) as exc:
            raise DecodeError("bad_payload", repr(exc)[:200]) from exc
        if event_type in self._upcasters:
            try:
                event_type, data = upcast(event_type, data, self._upcasters)
            except (KeyError, TypeError, ValueError) as exc:
                raise DecodeError("upcast_failed", repr(exc)[:200]) from exc
        for name, width in _WIDTHS:
            problem = attribute_problem(attrs[name], width)
            if problem is not None:
                raise DecodeError("unstorable_text", f"{name}: {problem}")
        unstorable = data_problem(data)
        if unstorable is not None:
            raise DecodeError("unstorable_text", ": ".join(unstorable))
        return Envelope(
            id=attrs["ce_id"],
            type=event_type,
            source=attrs["ce_source"],
            subject=attrs["ce_subject"],
            time=occurred,
            data=data,
        )


def _header_map(headers: Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, raw in headers:
        if name.startswith("ce_") and raw is not None:
            try:
                out[name] = raw.decode()
            except UnicodeDecodeError:
                raise DecodeError("bad_header", name) from None
    return out
