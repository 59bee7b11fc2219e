"""The Avro decoder, fuzzed: whatever a record holds, `decode` returns an event or raises
`DecodeError`, never anything else (which would fail the worker's batch instead of dead-lettering
the record).

Inputs: random bytes and headers; valid wire records of every catalog type, mutated, truncated,
with another schema id or another type's header; headers that are missing, not UTF-8, or hold
U+0000. Hypothesis profiles: tests/fuzz/conftest.py.
"""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from events.catalog import Catalog
from events.directory import Directory
from events.envelope import Envelope
from events.ids import uuid7
from events.jsonavro import from_json
from events.registry import LocalSchemaRegistry
from events.samples import sample_data
from events.serde import DecodeError, EncodedRecord, EventCodec
from events.storable import MAX_SUBJECT

CATALOG = Catalog.load()
DIRECTORY = Directory.load()
TYPES = sorted(CATALOG.kinds)
UNIT = "shilou.enforcement-office"
CE_NAMES = ("ce_id", "ce_type", "ce_source", "ce_subject", "ce_time", "ce_specversion")


def _codec() -> EventCodec:
    codec = EventCodec(CATALOG, LocalSchemaRegistry())
    asyncio.run(codec.prepare())
    return codec


CODEC = _codec()


def _valid(event_type: str) -> EncodedRecord:
    kind = CATALOG.get(event_type)
    data = from_json(kind.latest, sample_data(kind.latest), "data", DIRECTORY.knows)
    event = Envelope(str(uuid7()), event_type, UNIT, "FZ-1", datetime.now(UTC), data)
    return CODEC.encode(event)


VALID = {t: _valid(t) for t in TYPES}
SCHEMA_IDS = sorted({int.from_bytes(r.value[1:5], "big") for r in VALID.values()})


def decode_or_refuse(value: bytes | None, headers: list[tuple[str, bytes]]) -> Envelope | None:
    """The property: an event, or a DecodeError with a bounded reason; any other exception fails."""
    refusal: DecodeError | None = None
    try:
        return CODEC.decode(value, headers)
    except DecodeError as exc:
        refusal = exc
    assert refusal.reason.isidentifier(), refusal.reason
    assert len(refusal.detail) <= 1000
    return None


header_names = st.one_of(st.sampled_from([*CE_NAMES, "content-type"]), st.text(max_size=12))
header_values = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([t.encode() for t in TYPES]),
)
headers_strategy = st.lists(st.tuples(header_names, header_values), max_size=10)


@given(value=st.one_of(st.none(), st.binary(max_size=300)), headers=headers_strategy)
@example(value=None, headers=[])
@example(value=b"", headers=[(n, b"x") for n in CE_NAMES])
def test_random_bytes_and_headers_decode_or_raise_decode_error_only(
    value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    decode_or_refuse(value, headers)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, bytes]]]:
    record = VALID[draw(st.sampled_from(TYPES))]
    value = bytearray(record.value)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "set"]))
        at = draw(st.integers(0, max(0, len(value) - 1)))
        if op == "flip" and value:
            value[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            value[at:at] = draw(st.binary(min_size=1, max_size=9))
        elif op == "delete" and value:
            del value[at : at + draw(st.integers(1, 4))]
        elif value:
            # Extreme bytes: varint continuation (0xff), zero, and the sign bit.
            value[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
    return bytes(value), record.headers


@given(mutated())
def test_mutated_valid_records_decode_or_raise_decode_error_only(
    case: tuple[bytes, list[tuple[str, bytes]]],
) -> None:
    value, headers = case
    decode_or_refuse(value, headers)


@given(event_type=st.sampled_from(TYPES), data=st.data())
def test_truncated_records_decode_or_raise_decode_error_only(event_type: str, data: st.DataObject) -> None:
    record = VALID[event_type]
    cut = data.draw(st.integers(0, len(record.value) - 1))
    decode_or_refuse(record.value[:cut], record.headers)


@given(
    event_type=st.sampled_from(TYPES),
    schema_id=st.one_of(st.sampled_from(SCHEMA_IDS), st.integers(0, 2**32 - 1)),
    magic=st.sampled_from([0, 0, 0, 1, 0x7F, 0xFF]),
)
def test_another_schema_id_or_magic_byte_decodes_or_raises_decode_error_only(
    event_type: str, schema_id: int, magic: int
) -> None:
    record = VALID[event_type]
    value = struct.pack(">BI", magic, schema_id) + record.value[5:]
    decode_or_refuse(value, record.headers)


@given(
    event_type=st.sampled_from(TYPES),
    header=st.sampled_from(CE_NAMES),
    replacement=st.one_of(
        st.none(),
        st.binary(max_size=30),
        st.sampled_from([t.encode() for t in TYPES]),
        st.sampled_from([b"2026-13-40T00:00:00+08:00", b"9999-12-31T23:59:59-23:59", b"\x00", b"\xff\xfe"]),
        st.text(min_size=MAX_SUBJECT - 2, max_size=MAX_SUBJECT + 80).map(str.encode),
    ),
)
def test_wrong_missing_or_hostile_headers_decode_or_raise_decode_error_only(
    event_type: str, header: str, replacement: bytes | None
) -> None:
    record = VALID[event_type]
    headers = [(n, v) for n, v in record.headers if n != header]
    if replacement is not None:
        headers.append((header, replacement))
    decode_or_refuse(record.value, headers)


@pytest.mark.parametrize("event_type", TYPES)
def test_every_valid_record_still_decodes(event_type: str) -> None:
    """The fuzz targets above start from these: each must decode, or the mutations test nothing."""
    record = VALID[event_type]
    event = CODEC.decode(record.value, record.headers)
    assert event.id == dict(record.headers)["ce_id"].decode()
    # An older major version is upcast on read (case.decided.v1 -> v2).
    assert event.type.rsplit(".", 1)[0] == event_type.rsplit(".", 1)[0]


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        pytest.param("ce_subject", b"FZ-\x001", "unstorable_text", id="nul-subject"),
        pytest.param("ce_subject", b"S" * 129, "unstorable_text", id="subject-wider-than-its-column"),
        pytest.param("ce_id", b"i" * 65, "unstorable_text", id="id-wider-than-its-column"),
        pytest.param("ce_source", b"\xff", "bad_header", id="source-not-utf8"),
    ],
)
def test_a_header_the_store_cannot_keep_is_a_decode_error(header: str, value: bytes, reason: str) -> None:
    """Found by fuzzing: these decoded, and then failed every batch on PostgreSQL."""
    record = VALID["cn.gov.liandong.case.filed.v1"]
    headers = [(n, v) for n, v in record.headers if n != header] + [(header, value)]
    with pytest.raises(DecodeError) as info:
        CODEC.decode(record.value, headers)
    assert info.value.reason == reason


def test_data_with_nul_or_an_over_wide_identifier_is_a_decode_error() -> None:
    kind = CATALOG.get("cn.gov.liandong.case.filed.v1")
    for field, value in (("title", "未批\x00先建"), ("case_number", "番" * 129)):
        raw = {**sample_data(kind.latest), field: value}
        data = from_json(kind.latest, raw, "data", DIRECTORY.knows)
        event = Envelope(
            str(uuid7()), kind.type, "shilou.enforcement-office", "FZ-2", datetime.now(UTC), data
        )
        record = CODEC.encode(event)
        with pytest.raises(DecodeError) as info:
            CODEC.decode(record.value, record.headers)
        assert info.value.reason == "unstorable_text"
        assert info.value.detail.startswith(f"data.{field}:")
