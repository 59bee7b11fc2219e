"""The Kafka serde: CloudEvents binary-mode headers, Confluent wire format values, upcasting on read.

Everything runs in-process with `LocalSchemaRegistry`; no broker is involved.
"""

from __future__ import annotations

import copy
import json
import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from events.catalog import SCHEMA_ROOT, Catalog
from events.envelope import Envelope
from events.ids import uuid7
from events.registry import LocalSchemaRegistry
from events.serde import DecodeError, EventCodec
from events.upcasters import upcast
from tests.support import case_event

CATALOG = Catalog.load()
KINDS = ["filed", "decided", "closed"]
FILED = "cn.gov.liandong.case.filed.v1"
CLOSED = "cn.gov.liandong.case.closed.v1"
DECIDED = "cn.gov.liandong.case.decided.v1"
DECIDED_V2 = "cn.gov.liandong.case.decided.v2"
SUBJECT = "SL-2026-0042"
CE_HEADERS = ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_subject", "ce_time", "content-type"]

DISTRICT_NOTE = {
    "name": "district_note",
    "type": ["null", "string"],
    "default": None,
    "doc": "A note from the district (区) on the filing.",
}


async def make_codec(catalog: Catalog = CATALOG, registry: LocalSchemaRegistry | None = None) -> EventCodec:
    codec = EventCodec(catalog, registry or LocalSchemaRegistry())
    await codec.prepare()
    return codec


def type_of(kind: str) -> str:
    return f"cn.gov.liandong.case.{kind}.v1"


def replace_header(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(n, value if n == name else v) for n, v in headers]


def drop_header(headers: list[tuple[str, bytes]], name: str) -> list[tuple[str, bytes]]:
    return [(n, v) for n, v in headers if n != name]


def decode_error(codec: EventCodec, value: bytes | None, headers: list[tuple[str, bytes]]) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        codec.decode(value, headers)
    return caught.value


def defaults_of(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The value each field of `schema` with a default takes when a record does not carry it."""
    return {f["name"]: f["default"] for f in schema["fields"] if "default" in f}


def field_names(schema: Mapping[str, Any]) -> list[str]:
    return [f["name"] for f in schema["fields"]]


def test_the_round_trip_kinds_still_have_what_this_suite_assumes() -> None:
    # filed has grown optional fields (revision 2); decided.v1 has a successor major version.
    filed = CATALOG.get(FILED)
    assert len(filed.revisions) >= 2
    assert set(field_names(filed.latest)) > set(case_event("filed", SUBJECT).data)
    assert DECIDED_V2 in CATALOG.kinds
    assert field_names(CATALOG.get(CLOSED).latest) == list(case_event("closed", SUBJECT).data)


async def test_a_closed_event_survives_an_encode_decode_round_trip_unchanged() -> None:
    codec = await make_codec()
    event = case_event("closed", SUBJECT)

    record = codec.encode(event)
    decoded = codec.decode(record.value, record.headers)

    assert decoded == event
    assert dict(decoded.data) == dict(event.data)


async def test_a_filed_event_round_trips_with_the_new_optional_fields_at_their_defaults() -> None:
    codec = await make_codec()
    event = case_event("filed", SUBJECT)
    latest = CATALOG.get(FILED).latest

    record = codec.encode(event)
    decoded = codec.decode(record.value, record.headers)

    added = {name: value for name, value in defaults_of(latest).items() if name not in event.data}
    assert added, "revision 2 of case.filed.v1 should add optional fields"
    assert dict(decoded.data) == {**event.data, **added}
    assert list(decoded.data) == field_names(latest)
    assert decoded.data["party_kind"] == "unknown"
    assert decoded.data["lead_id"] is None
    assert (decoded.id, decoded.type, decoded.source, decoded.subject, decoded.time) == (
        event.id,
        event.type,
        event.source,
        event.subject,
        event.time,
    )


async def test_a_decided_v1_event_round_trips_as_decided_v2_via_the_upcaster() -> None:
    codec = await make_codec()
    event = case_event("decided", SUBJECT)

    record = codec.encode(event)
    decoded = codec.decode(record.value, record.headers)

    assert decoded.type == DECIDED_V2
    expected_type, expected = upcast(DECIDED, {**defaults_of(CATALOG.get(DECIDED).latest), **event.data})
    assert expected_type == DECIDED_V2
    assert dict(decoded.data) == dict(expected)
    assert set(decoded.data) == set(field_names(CATALOG.get(DECIDED_V2).latest))
    assert decoded.data["outcome"] == "penalty"
    assert decoded.data["penalties"] == [{"kind": "fine", "amount_fen": 500_000, "detail": None}]
    assert (decoded.id, decoded.source, decoded.subject, decoded.time) == (
        event.id,
        event.source,
        event.subject,
        event.time,
    )


async def test_a_decided_v2_event_survives_an_encode_decode_round_trip_unchanged() -> None:
    codec = await make_codec()
    event = Envelope(
        id=str(uuid7()),
        type=DECIDED_V2,
        source="shilou.enforcement-office",
        subject=SUBJECT,
        time=datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        data={
            "outcome": "penalty",
            "penalties": [
                {"kind": "warning", "amount_fen": None, "detail": None},
                {"kind": "fine", "amount_fen": 500_000, "detail": None},
                {"kind": "other", "amount_fen": None, "detail": "责令限期拆除"},
            ],
            "decision_number": "石综执罚决〔2026〕7号",
            "major_case": True,
            "legal_review_id": "LR-2026-0003",
        },
    )

    record = codec.encode(event)
    decoded = codec.decode(record.value, record.headers)

    assert decoded == event
    assert dict(decoded.data) == dict(event.data)


@pytest.mark.parametrize("kind", KINDS)
async def test_the_value_is_in_confluent_wire_format_with_the_latest_schema_id(kind: str) -> None:
    codec = await make_codec()

    record = codec.encode(case_event(kind, SUBJECT))

    assert record.value[0] == 0
    (schema_id,) = struct.unpack(">I", record.value[1:5])
    assert schema_id == LocalSchemaRegistry.id_for(CATALOG.get(type_of(kind)).latest)
    assert len(record.value) > 5


@pytest.mark.parametrize("kind", KINDS)
async def test_the_headers_are_cloudevents_binary_mode_attributes(kind: str) -> None:
    codec = await make_codec()
    event = case_event(kind, SUBJECT)

    record = codec.encode(event)

    assert [name for name, _ in record.headers] == CE_HEADERS
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == event.id.encode()
    assert headers["ce_source"] == event.source.encode()
    assert headers["ce_type"] == type_of(kind).encode()
    assert headers["ce_subject"] == SUBJECT.encode()
    assert headers["ce_time"] == event.time.isoformat().encode()
    assert headers["content-type"] == b"application/avro"
    assert all(isinstance(value, bytes) for value in headers.values())


async def test_the_record_key_is_the_subject_so_one_case_stays_on_one_partition() -> None:
    codec = await make_codec()

    record = codec.encode(case_event("filed", "宝山-2026-0001"))

    assert record.key == "宝山-2026-0001".encode()


@pytest.mark.parametrize("header", ["ce_id", "ce_type", "ce_source", "ce_subject", "ce_time"])
async def test_decoding_without_a_required_header_fails_as_missing_header_naming_it(header: str) -> None:
    codec = await make_codec()
    record = codec.encode(case_event("filed", SUBJECT))

    error = decode_error(codec, record.value, drop_header(record.headers, header))

    assert error.reason == "missing_header"
    assert error.detail == header


async def test_decoding_an_event_type_the_catalog_does_not_know_fails_as_unknown_type() -> None:
    codec = await make_codec()
    record = codec.encode(case_event("filed", SUBJECT))
    headers = replace_header(record.headers, "ce_type", b"cn.gov.liandong.case.reopened.v1")

    error = decode_error(codec, record.value, headers)

    assert error.reason == "unknown_type"
    assert error.detail == "cn.gov.liandong.case.reopened.v1"


@pytest.mark.parametrize("value", [None, b"", b"\x00", b"\x00\x00\x00\x00"], ids=["none", "0", "1", "4"])
async def test_a_value_that_is_none_or_shorter_than_five_bytes_fails_as_bad_wire_format(
    value: bytes | None,
) -> None:
    codec = await make_codec()
    record = codec.encode(case_event("closed", SUBJECT))

    error = decode_error(codec, value, record.headers)

    assert error.reason == "bad_wire_format"


@pytest.mark.parametrize("magic", [1, 0x7F, 0x80, 0xFF])
async def test_a_value_with_a_magic_byte_other_than_zero_fails_as_bad_wire_format(magic: int) -> None:
    codec = await make_codec()
    record = codec.encode(case_event("closed", SUBJECT))

    error = decode_error(codec, bytes([magic]) + record.value[1:], record.headers)

    assert error.reason == "bad_wire_format"
    assert "magic" in error.detail


async def test_a_schema_id_the_registry_never_handed_out_fails_as_unknown_schema() -> None:
    codec = await make_codec()
    record = codec.encode(case_event("closed", SUBJECT))
    known = {LocalSchemaRegistry.id_for(r) for kind in CATALOG for r in kind.revisions}
    unknown = next(i for i in range(1, 100) if i not in known)

    error = decode_error(codec, b"\x00" + struct.pack(">I", unknown) + record.value[5:], record.headers)

    assert error.reason == "unknown_schema"
    assert error.detail == str(unknown)


async def test_a_schema_id_of_another_event_type_fails_as_schema_mismatch() -> None:
    codec = await make_codec()
    record = codec.encode(case_event("filed", SUBJECT))
    headers = replace_header(record.headers, "ce_type", CLOSED.encode())

    error = decode_error(codec, record.value, headers)

    assert error.reason == "schema_mismatch"
    assert CLOSED in error.detail


@pytest.mark.parametrize("kind", KINDS)
async def test_every_truncation_of_the_avro_payload_fails_as_bad_payload(kind: str) -> None:
    codec = await make_codec()
    record = codec.encode(case_event(kind, SUBJECT))

    reasons = {
        cut: decode_error(codec, record.value[:cut], record.headers).reason
        for cut in range(5, len(record.value))
    }

    assert reasons
    assert set(reasons.values()) == {"bad_payload"}, reasons


async def test_a_ce_time_that_is_not_a_timestamp_fails_as_bad_payload() -> None:
    codec = await make_codec()
    record = codec.encode(case_event("closed", SUBJECT))

    error = decode_error(codec, record.value, replace_header(record.headers, "ce_time", b"yesterday"))

    assert error.reason == "bad_payload"


@pytest.mark.parametrize("header", ["ce_source", "ce_subject", "ce_id"])
async def test_a_header_value_that_is_not_utf8_fails_as_bad_header_naming_it(header: str) -> None:
    codec = await make_codec()
    record = codec.encode(case_event("filed", SUBJECT))

    error = decode_error(codec, record.value, replace_header(record.headers, header, b"\xff\xfe\xfd"))

    assert error.reason == "bad_header"
    assert error.detail == header


# Upcasting: an old record, written with revision 1, read by a hub that knows revision 2.


def filed_v1() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (SCHEMA_ROOT / "case.filed.v1" / "1.avsc").read_text(encoding="utf-8")
    )
    return loaded


def filed_v2() -> dict[str, Any]:
    schema = copy.deepcopy(filed_v1())
    schema["fields"].append(dict(DISTRICT_NOTE))
    return schema


def schema_root(root: Path, *revisions: dict[str, Any], short_type: str = "case.filed.v1") -> Catalog:
    folder = root / short_type
    folder.mkdir(parents=True)
    for number, revision in enumerate(revisions, start=1):
        (folder / f"{number}.avsc").write_text(json.dumps(revision, ensure_ascii=False), encoding="utf-8")
    return Catalog.load(root)


@pytest.fixture
def old_catalog(tmp_path: Path) -> Catalog:
    return schema_root(tmp_path / "old", filed_v1())


@pytest.fixture
def new_catalog(tmp_path: Path) -> Catalog:
    return schema_root(tmp_path / "new", filed_v1(), filed_v2())


async def test_a_record_written_with_revision_1_is_upcast_to_revision_2_on_read(
    old_catalog: Catalog, new_catalog: Catalog
) -> None:
    old_codec = await make_codec(old_catalog, LocalSchemaRegistry())
    new_codec = await make_codec(new_catalog, LocalSchemaRegistry())
    event = case_event("filed", SUBJECT)

    record = old_codec.encode(event)
    decoded = new_codec.decode(record.value, record.headers)

    assert struct.unpack(">I", record.value[1:5])[0] == LocalSchemaRegistry.id_for(filed_v1())
    assert dict(decoded.data) == {**event.data, "district_note": None}
    assert (decoded.id, decoded.type, decoded.subject, decoded.time) == (
        event.id,
        event.type,
        event.subject,
        event.time,
    )


async def test_a_record_written_with_revision_2_keeps_its_new_field_on_read(new_catalog: Catalog) -> None:
    codec = await make_codec(new_catalog)
    event = case_event("filed", SUBJECT, data={**case_event("filed", SUBJECT).data, "district_note": "加急"})

    record = codec.encode(event)

    assert struct.unpack(">I", record.value[1:5])[0] == LocalSchemaRegistry.id_for(filed_v2())
    assert codec.decode(record.value, record.headers).data["district_note"] == "加急"


async def test_a_codec_refuses_a_record_from_a_revision_it_has_never_seen_as_unknown_schema(
    old_catalog: Catalog, new_catalog: Catalog
) -> None:
    old_codec = await make_codec(old_catalog)
    new_codec = await make_codec(new_catalog)

    record = new_codec.encode(case_event("filed", SUBJECT))
    error = decode_error(old_codec, record.value, record.headers)

    assert error.reason == "unknown_schema"
    assert error.detail == str(LocalSchemaRegistry.id_for(filed_v2()))


async def test_separate_registries_hand_out_the_same_ids_because_ids_derive_from_content(
    old_catalog: Catalog, new_catalog: Catalog
) -> None:
    first, second = LocalSchemaRegistry(), LocalSchemaRegistry()
    await make_codec(old_catalog, first)
    await make_codec(new_catalog, second)

    id_v1_first = await first.register(FILED, filed_v1())
    id_v1_second = await second.register(FILED, filed_v1())
    id_v2_second = await second.register(FILED, filed_v2())

    assert id_v1_first == id_v1_second == LocalSchemaRegistry.id_for(filed_v1())
    assert id_v2_second == LocalSchemaRegistry.id_for(filed_v2())
    assert id_v1_first != id_v2_second


async def test_two_codecs_sharing_one_registry_agree_on_the_bytes(
    old_catalog: Catalog, new_catalog: Catalog
) -> None:
    shared = LocalSchemaRegistry()
    old_codec = await make_codec(old_catalog, shared)
    new_codec = await make_codec(new_catalog, shared)
    event = case_event("filed", SUBJECT)

    record = old_codec.encode(event)

    assert new_codec.decode(record.value, record.headers).data["title"] == event.data["title"]
    assert await shared.schema_by_id(LocalSchemaRegistry.id_for(filed_v2())) == filed_v2()


# Replay: bytes of a v1 decision, written before v2 existed, read by today's hub.


def decided_v1_revision_1() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (SCHEMA_ROOT / "case.decided.v1" / "1.avsc").read_text(encoding="utf-8")
    )
    return loaded


@pytest.fixture
def decided_v1_only_catalog(tmp_path: Path) -> Catalog:
    catalog = schema_root(tmp_path / "v1-only", decided_v1_revision_1(), short_type="case.decided.v1")
    assert set(catalog.kinds) == {DECIDED}
    assert len(catalog.get(DECIDED).revisions) == 1
    return catalog


async def test_replayed_v1_bytes_of_a_decision_decode_as_v2_with_the_fine_in_penalties(
    decided_v1_only_catalog: Catalog,
) -> None:
    old_codec = await make_codec(decided_v1_only_catalog, LocalSchemaRegistry())
    hub = await make_codec()
    data = {**case_event("decided", SUBJECT).data, "decision_number": "石综执罚决〔2025〕31号"}
    event = case_event("decided", SUBJECT, data=data)

    record = old_codec.encode(event)
    decoded = hub.decode(record.value, record.headers)

    assert struct.unpack(">I", record.value[1:5])[0] == LocalSchemaRegistry.id_for(decided_v1_revision_1())
    assert decoded.type == DECIDED_V2
    assert dict(decoded.data) == {
        "outcome": "penalty",
        "penalties": [{"kind": "fine", "amount_fen": 500_000, "detail": None}],
        "decision_number": "石综执罚决〔2025〕31号",
        "major_case": False,
        "legal_review_id": None,
    }
    assert (decoded.id, decoded.source, decoded.subject, decoded.time) == (
        event.id,
        event.source,
        event.subject,
        event.time,
    )


async def test_replayed_v1_penalty_kinds_in_chinese_become_structured_penalties(
    decided_v1_only_catalog: Catalog,
) -> None:
    old_codec = await make_codec(decided_v1_only_catalog, LocalSchemaRegistry())
    hub = await make_codec()
    data = {
        **case_event("decided", SUBJECT).data,
        "penalty_kinds": ["警告", "罚款", "责令限期拆除"],
        "fine_amount_fen": 120_000,
    }

    record = old_codec.encode(case_event("decided", SUBJECT, data=data))
    decoded = hub.decode(record.value, record.headers)

    assert decoded.type == DECIDED_V2
    assert decoded.data["penalties"] == [
        {"kind": "warning", "amount_fen": None, "detail": None},
        {"kind": "fine", "amount_fen": 120_000, "detail": None},
        {"kind": "other", "amount_fen": None, "detail": "责令限期拆除"},
    ]
    assert "fine_amount_fen" not in decoded.data
    assert "penalty_kinds" not in decoded.data
