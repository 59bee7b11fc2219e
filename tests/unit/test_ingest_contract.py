"""The ingest contract of the HTTP gateway, checked on `parse_request` alone (no I/O).

Every refusal is checked for its status, its bounded `reason` label and the field it names, so
that a publishing unit's developer can fix a request from the answer alone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.http_gateway.ingest import (
    BATCH,
    STRUCTURED,
    FieldProblem,
    IngestRejected,
    Limits,
    parse_request,
)
from events.catalog import Catalog
from events.directory import Directory
from events.envelope import Envelope
from events.samples import SampleContext, sample_data
from tests.support import case_event, cloudevent_json

CATALOG = Catalog.load()
DIRECTORY = Directory.load()
LIMITS = Limits()

UNIT = "shilou.enforcement-office"
OTHER_UNIT = "shiqiao.enforcement-office"
POLICE = "shilou.police-station"
DISTRICT_UNIT = "district.urban-management"
FILED = "cn.gov.liandong.case.filed.v1"
DECIDED = "cn.gov.liandong.case.decided.v1"
CLOSED = "cn.gov.liandong.case.closed.v1"


def event(kind: str = "filed", subject: str = "SL-2026-0001", **attrs: Any) -> dict[str, Any]:
    """A valid structured CloudEvent from UNIT, with attributes replaced by `attrs`."""
    doc = cloudevent_json(case_event(kind, subject))
    doc.update(attrs)
    return doc


def without(doc: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in names}


def with_data(doc: dict[str, Any], drop: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
    data = {k: v for k, v in doc["data"].items() if k not in drop}
    data.update(fields)
    return {**doc, "data": data}


def encode(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def parse(
    doc: Any, content_type: str | None = STRUCTURED, unit: str = UNIT, limits: Limits = LIMITS
) -> list[Envelope]:
    body = doc if isinstance(doc, bytes) else encode(doc)
    return parse_request(content_type, body, unit, CATALOG, DIRECTORY, limits)


def refusal(doc: Any, content_type: str | None = STRUCTURED, unit: str = UNIT) -> IngestRejected:
    with pytest.raises(IngestRejected) as info:
        parse(doc, content_type, unit)
    return info.value


def only_problem(exc: IngestRejected) -> FieldProblem:
    assert len(exc.problems) == 1, exc.problems
    return exc.problems[0]


def assert_invalid(exc: IngestRejected, field: str, reason_part: str = "") -> None:
    """A 422 naming exactly one field of a structured event (no index)."""
    assert (exc.status, exc.reason) == (422, "invalid_event"), exc
    problem = only_problem(exc)
    assert problem.field == field
    assert reason_part in problem.reason
    assert problem.index is None


# --- a valid event ------------------------------------------------------------------------------


def schema_defaults(event_type: str) -> dict[str, Any]:
    """What the latest revision of `event_type` fills in for optional fields a request leaves out."""
    return {f["name"]: f["default"] for f in CATALOG.get(event_type).latest["fields"] if "default" in f}


def test_a_valid_structured_event_becomes_one_envelope_with_the_same_attributes() -> None:
    doc = event()
    # The gateway checks the unit's permissions too; this unit may file cases in its own township.
    publisher = DIRECTORY.units[UNIT]
    assert publisher.may_publish(FILED)
    assert publisher.covers(doc["data"]["township"])
    left_out = {k: v for k, v in schema_defaults(FILED).items() if k not in doc["data"]}
    assert left_out, "the filed schema should have optional fields the sample does not send"

    [envelope] = parse(doc)

    assert envelope == Envelope(
        id=doc["id"],
        type=FILED,
        source=UNIT,
        subject="SL-2026-0001",
        time=datetime.fromisoformat(doc["time"]),
        data={**doc["data"], **left_out},
    )
    assert [f["name"] for f in CATALOG.get(FILED).latest["fields"]] == list(envelope.data)


def test_optional_data_fields_left_out_take_their_schema_defaults() -> None:
    doc = with_data(event(), drop=("case_number", "requires_legal_review"))

    [envelope] = parse(doc)

    assert envelope.data["case_number"] is None
    assert envelope.data["requires_legal_review"] is False


def test_an_event_without_datacontenttype_is_read_as_json() -> None:
    [envelope] = parse(without(event(), "datacontenttype"))

    assert envelope.data["township"] == "shilou"


def test_a_string_dataschema_is_accepted() -> None:
    [envelope] = parse(event(dataschema="https://liandong.example/schemas/case.filed.v1/1.avsc"))

    assert envelope.type == FILED


# --- content type -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "text/plain", "application/cloudevents+xml", "multipart/form-data"],
)
def test_a_content_type_other_than_cloudevents_json_is_refused_with_415(content_type: str | None) -> None:
    exc = refusal(event(), content_type)

    assert (exc.status, exc.reason) == (415, "unsupported_media_type")
    assert only_problem(exc).field == "Content-Type"
    assert exc.event_type == "unknown"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/cloudevents+json; charset=utf-8",
        "application/cloudevents+json;charset=UTF-8",
        "Application/CloudEvents+JSON",
    ],
)
def test_a_charset_parameter_or_other_case_on_the_content_type_is_accepted(content_type: str) -> None:
    assert len(parse(event(), content_type)) == 1


def test_a_charset_parameter_on_the_batch_content_type_is_accepted() -> None:
    envelopes = parse([event(), event()], f"{BATCH}; charset=utf-8")

    assert len(envelopes) == 2


# --- body: JSON, shape, size --------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b'{"id": 1,}', b"{'id': 1}"])
def test_a_body_that_is_not_json_is_refused_as_malformed_json(body: bytes) -> None:
    exc = refusal(body)

    assert (exc.status, exc.reason) == (400, "malformed_json")
    assert only_problem(exc).field == "body"


def test_a_body_that_is_not_utf8_is_refused_as_malformed_json() -> None:
    gbk = json.dumps(event(), ensure_ascii=False).encode("gbk")  # the title is Chinese

    exc = refusal(gbk)

    assert (exc.status, exc.reason) == (400, "malformed_json")
    problem = only_problem(exc)
    assert problem.field == "body"
    assert "utf-8" in problem.reason


@pytest.mark.parametrize("doc", [[], ["x"], "an event", 42, None, True])
def test_a_structured_body_that_is_not_an_object_is_refused(doc: Any) -> None:
    exc = refusal(doc, STRUCTURED)

    assert (exc.status, exc.reason) == (400, "malformed_event")
    assert only_problem(exc) == FieldProblem("body", "not an object")


@pytest.mark.parametrize("doc", [{}, "events", 3, None])
def test_a_batch_body_that_is_not_an_array_is_refused(doc: Any) -> None:
    exc = refusal(doc, BATCH)

    assert (exc.status, exc.reason) == (400, "malformed_batch")
    assert only_problem(exc) == FieldProblem("body", "not an array")


def test_a_structured_event_sent_as_a_batch_is_refused_as_not_an_array() -> None:
    exc = refusal(event(), BATCH)

    assert (exc.status, exc.reason) == (400, "malformed_batch")


def test_an_empty_batch_is_refused() -> None:
    exc = refusal([], BATCH)

    assert (exc.status, exc.reason) == (400, "empty_batch")
    assert only_problem(exc).field == "body"


def test_a_body_over_the_limit_is_refused_with_413_before_it_is_parsed() -> None:
    body = b"[" + b" " * LIMITS.max_body_bytes + b"garbage"

    exc = refusal(body, BATCH)

    assert (exc.status, exc.reason) == (413, "too_large")
    problem = only_problem(exc)
    assert problem.field == "body"
    assert str(LIMITS.max_body_bytes) in problem.reason


def test_a_body_of_exactly_the_limit_is_accepted() -> None:
    body = encode(event())
    body += b" " * (LIMITS.max_body_bytes - len(body))
    assert len(body) == LIMITS.max_body_bytes

    assert len(parse(body)) == 1


def test_a_batch_of_more_than_the_maximum_events_is_refused_with_413() -> None:
    exc = refusal([{}] * (LIMITS.max_batch_events + 1), BATCH)

    assert (exc.status, exc.reason) == (413, "too_large")
    problem = only_problem(exc)
    assert problem.field == "body"
    assert str(LIMITS.max_batch_events) in problem.reason


def test_a_batch_of_exactly_the_maximum_events_is_accepted() -> None:
    docs = [event(subject=f"SL-2026-{i:04d}") for i in range(LIMITS.max_batch_events)]

    envelopes = parse(docs, BATCH)

    assert [e.subject for e in envelopes] == [d["subject"] for d in docs]


def test_one_event_over_the_event_size_limit_is_refused_with_422_naming_it() -> None:
    big = event(comment="x" * LIMITS.max_event_bytes)

    exc = refusal([event(), big], BATCH)

    assert (exc.status, exc.reason) == (422, "invalid_event")
    problem = only_problem(exc)
    assert (problem.field, problem.index) == ("event", 1)
    assert str(LIMITS.max_event_bytes) in problem.reason


# --- the key's unit -----------------------------------------------------------------------------


def test_a_key_whose_unit_is_not_in_the_directory_is_refused_with_403_unknown_unit() -> None:
    exc = refusal(event(source="retired.office"), unit="retired.office")

    assert (exc.status, exc.reason) == (403, "unknown_unit")
    assert only_problem(exc).field == "Authorization"


# --- context attributes -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["specversion", "id", "source", "type", "subject", "time", "data"])
def test_each_missing_required_attribute_is_named(name: str) -> None:
    exc = refusal(without(event(), name))

    assert_invalid(exc, name, "required attribute missing")
    assert exc.event_type == (FILED if name != "type" else "unknown")


@pytest.mark.parametrize("name", ["comexampleextension", "traceparent", "Source"])
def test_an_unknown_attribute_is_named(name: str) -> None:
    exc = refusal(event(**{name: "x"}))

    assert_invalid(exc, name, "unknown attribute")


def test_data_base64_is_refused_with_a_hint_to_send_json_in_data() -> None:
    doc = without(event(), "data")
    doc["data_base64"] = "eyJ0b3duc2hpcCI6ICJzaGlsb3UifQ=="

    exc = refusal(doc)

    assert_invalid(exc, "data_base64", "send data as JSON in 'data'")


@pytest.mark.parametrize("value", ["0.3", "1", "1.0.0", 1.0, None])
def test_a_specversion_other_than_1_0_is_refused(value: Any) -> None:
    assert_invalid(refusal(event(specversion=value)), "specversion", "'1.0'")


@pytest.mark.parametrize(
    "value",
    [
        "not-a-uuid",
        "0190d1c2-7b9a-7c3e-8f00",
        "0190d1c27b9a7c3e8f0012345678abcd",
        "0190d1c2-7b9a-7c3e-8f00-12345678abcg",
        "",
        12345,
        None,
    ],
)
def test_an_id_that_is_not_a_uuid_is_refused(value: Any) -> None:
    assert_invalid(refusal(event(id=value)), "id")


@pytest.mark.parametrize(
    "value",
    [
        "urn:0190d1c27b9a7c3e8f0012345678abcd",
        "{{0190d1c27b9a7c3e8f0012345678abcd}}",
        "0190d1c27b9a7c3e8f0012345678abcd----",
    ],
)
def test_an_id_of_36_characters_that_is_not_a_hyphenated_uuid_is_refused(value: str) -> None:
    assert_invalid(refusal(event(id=value)), "id", "UUID")


def test_ids_are_lower_cased() -> None:
    [envelope] = parse(event(id="0190D1C2-7B9A-7C3E-8F00-12345678ABCD"))

    assert envelope.id == "0190d1c2-7b9a-7c3e-8f00-12345678abcd"


@pytest.mark.parametrize(
    "value", ["cn.gov.liandong.case.reopened.v1", "case.filed.v1", "cn.gov.liandong.case.filed.v2", "", 7]
)
def test_an_unknown_type_is_refused(value: Any) -> None:
    assert_invalid(refusal(event(type=value)), "type")


@pytest.mark.parametrize(
    "value", ["", "-SL-1", ".hidden", "SL 2026 0001", "石楼-2026-0001", "SL#1", "x" * 129, 2026]
)
def test_a_bad_subject_is_refused(value: Any) -> None:
    assert_invalid(refusal(event(subject=value)), "subject")


def test_a_subject_of_128_allowed_characters_is_accepted() -> None:
    subject = "S" + "a1._:/-" * 18 + "x"
    assert len(subject) == 128

    [envelope] = parse(event(subject=subject))

    assert envelope.subject == subject


def test_a_subject_with_a_trailing_newline_is_refused() -> None:
    assert_invalid(refusal(event(subject="SL-2026-0001\n")), "subject")


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-29T10:00:00",
        "2026-11-29T10:00:00.123456",
        "2026-11-29 10:00:00+08:00",
        "2026-11-29",
        "29/11/2026 10:00 +08:00",
        "yesterday at ten",
        "1764381600",
        "",
        1764381600,
    ],
)
def test_a_time_without_offset_or_not_rfc3339_is_refused(value: Any) -> None:
    assert_invalid(refusal(event(time=value)), "time")


@pytest.mark.parametrize(
    "value",
    [
        "2026-W48-7T10:00:00+08:00",  # ISO week date
        "2026-11-29T10:00+08:00",  # no seconds
        "2026-11-29T10:00:00+08",  # offset without minutes
        "2026-11-29T10:00:00+0800",  # offset without colon
    ],
)
def test_iso_8601_forms_that_are_not_rfc3339_are_refused(value: str) -> None:
    assert_invalid(refusal(event(time=value)), "time")


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59-08:00"])
def test_a_time_whose_utc_instant_is_out_of_range_is_refused_not_crashing(value: str) -> None:
    assert_invalid(refusal(event(time=value)), "time")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-29T10:00:00+08:00", datetime(2026, 11, 29, 2, 0, tzinfo=UTC)),
        ("2026-11-29T01:30:00-05:00", datetime(2026, 11, 29, 6, 30, tzinfo=UTC)),
        ("2026-11-29T02:00:00Z", datetime(2026, 11, 29, 2, 0, tzinfo=UTC)),
        ("2026-11-29t02:00:00z", datetime(2026, 11, 29, 2, 0, tzinfo=UTC)),
        ("2026-11-29T10:00:00.25+08:00", datetime(2026, 11, 29, 2, 0, 0, 250_000, tzinfo=UTC)),
        ("2026-11-29T10:00:00.123456789+08:00", datetime(2026, 11, 29, 2, 0, 0, 123_456, tzinfo=UTC)),
    ],
)
def test_time_is_normalised_to_utc(value: str, expected: datetime) -> None:
    [envelope] = parse(event(time=value))

    assert envelope.time == expected
    assert envelope.time.utcoffset() == timedelta(0)
    assert (envelope.time.hour, envelope.time.minute) == (expected.hour, expected.minute)


@pytest.mark.parametrize(
    "value", ["text/xml", "application/avro", "application/cloudevents+json", "", None, 1]
)
def test_a_datacontenttype_other_than_application_json_is_refused(value: Any) -> None:
    assert_invalid(refusal(event(datacontenttype=value)), "datacontenttype", "application/json")


@pytest.mark.parametrize("value", [5, "", None, ["https://x"]])
def test_a_dataschema_that_is_not_a_non_empty_string_is_refused(value: Any) -> None:
    assert_invalid(refusal(event(dataschema=value)), "dataschema")


# --- data ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "drop", "fields", "field", "reason_part"),
    [
        ("filed", ("township",), {}, "data.township", "required field missing"),
        ("filed", ("handling_unit",), {}, "data.handling_unit", "required field missing"),
        ("filed", (), {"foo": "bar"}, "data.foo", "unknown field"),
        ("filed", (), {"requires_legal_review": "true"}, "data.requires_legal_review", "true or false"),
        ("filed", (), {"requires_legal_review": 1}, "data.requires_legal_review", "true or false"),
        ("filed", (), {"title": 5}, "data.title", "must be a string"),
        ("filed", (), {"title": "x" * 8193}, "data.title", "longer than"),
        ("filed", (), {"case_number": 17}, "data.case_number", "must be a string"),
        ("filed", (), {"township": "nowhere"}, "data.township", "unknown township 'nowhere'"),
        ("filed", (), {"handling_unit": "nowhere.office"}, "data.handling_unit", "unknown unit"),
        ("decided", (), {"outcome": "dismissed"}, "data.outcome", "must be one of penalty"),
        ("decided", (), {"outcome": "filed"}, "data.outcome", "must be one of"),
        ("decided", (), {"outcome": None}, "data.outcome", "must be one of"),
        ("decided", (), {"fine_amount_fen": 5000.5}, "data.fine_amount_fen", "must be an integer"),
        ("decided", (), {"fine_amount_fen": 5000.0}, "data.fine_amount_fen", "must be an integer"),
        ("decided", (), {"fine_amount_fen": True}, "data.fine_amount_fen", "must be an integer"),
        ("decided", (), {"fine_amount_fen": "5000"}, "data.fine_amount_fen", "must be an integer"),
        ("decided", (), {"fine_amount_fen": 2**63}, "data.fine_amount_fen", "out of range"),
        ("decided", (), {"penalty_kinds": "fine"}, "data.penalty_kinds", "must be an array"),
        ("decided", (), {"penalty_kinds": ["fine", 2]}, "data.penalty_kinds[1]", "must be a string"),
        ("decided", (), {"legal_review_completed": None}, "data.legal_review_completed", "true or false"),
        ("closed", (), {"closure_reason": ["executed"]}, "data.closure_reason", "must be a string"),
    ],
)
def test_a_data_field_error_names_the_field(
    kind: str, drop: tuple[str, ...], fields: dict[str, Any], field: str, reason_part: str
) -> None:
    exc = refusal(with_data(event(kind), drop, **fields))

    assert_invalid(exc, field, reason_part)
    assert exc.event_type == f"cn.gov.liandong.case.{kind}.v1"


@pytest.mark.parametrize("value", ["filed", [], None, 0])
def test_data_that_is_not_an_object_is_refused(value: Any) -> None:
    assert_invalid(refusal(event(data=value)), "data", "must be an object")


def test_a_fine_given_as_an_integer_is_kept_exactly() -> None:
    [envelope] = parse(with_data(event("decided"), fine_amount_fen=123_456_789_012))

    assert envelope.data["fine_amount_fen"] == 123_456_789_012
    assert isinstance(envelope.data["fine_amount_fen"], int)


def test_a_lone_surrogate_in_data_is_refused_not_crashing() -> None:
    body = encode(event()).replace("村民未批先建三层住宅".encode(), b"\\ud800")
    assert b"\\ud800" in body

    assert_invalid(refusal(body), "data.title")


# --- source -------------------------------------------------------------------------------------


def test_a_source_that_is_another_known_unit_is_refused_as_forged() -> None:
    exc = refusal(event(source=OTHER_UNIT))

    assert (exc.status, exc.reason) == (403, "forged_source")
    problem = only_problem(exc)
    assert (problem.field, problem.index) == ("source", None)
    assert "is a unit" in problem.reason
    assert UNIT in problem.reason
    assert exc.event_type == FILED


def test_a_source_that_is_not_a_registered_unit_is_refused_as_forged() -> None:
    exc = refusal(event(source="nowhere.office"))

    assert (exc.status, exc.reason) == (403, "forged_source")
    problem = only_problem(exc)
    assert problem.field == "source"
    assert "not a registered unit" in problem.reason


def test_a_forged_event_in_a_batch_makes_the_whole_batch_403_and_lists_every_problem() -> None:
    docs = [event(), event(source=OTHER_UNIT), with_data(event(), township="nowhere")]

    exc = refusal(docs, BATCH)

    assert (exc.status, exc.reason) == (403, "forged_source")
    assert [(p.field, p.index) for p in exc.problems] == [("source", 1), ("data.township", 2)]


# --- what a unit may publish ---------------------------------------------------------------------


def test_a_unit_whose_patterns_do_not_match_the_type_is_refused_as_type_not_permitted() -> None:
    assert not DIRECTORY.units[POLICE].may_publish(FILED)

    exc = refusal(event(source=POLICE), unit=POLICE)

    assert (exc.status, exc.reason) == (403, "type_not_permitted")
    problem = only_problem(exc)
    assert (problem.field, problem.index) == ("type", None)
    assert POLICE in problem.reason
    assert FILED in problem.reason
    assert exc.event_type == FILED


def test_an_exact_pattern_permits_that_event_and_no_other_of_its_area() -> None:
    raised = "cn.gov.liandong.dispute.raised.v1"
    decided = "cn.gov.liandong.dispute.decided.v1"
    assert "dispute.raised" in DIRECTORY.units[POLICE].publishes
    data = sample_data(CATALOG.get(raised).latest, SampleContext(unit=POLICE, other_unit=UNIT))
    doc = {**event(source=POLICE, type=raised), "data": data}

    [envelope] = parse(doc, unit=POLICE)
    exc = refusal({**doc, "type": decided}, unit=POLICE)

    assert (envelope.type, envelope.source) == (raised, POLICE)
    assert (exc.status, exc.reason) == (403, "type_not_permitted")
    assert only_problem(exc).field == "type"


def test_a_unit_publishing_about_a_township_outside_its_jurisdiction_is_refused() -> None:
    assert not DIRECTORY.units[UNIT].covers("nancun")

    exc = refusal(with_data(event(), township="nancun"))

    assert (exc.status, exc.reason) == (403, "township_not_permitted")
    problem = only_problem(exc)
    assert (problem.field, problem.index) == ("data.township", None)
    assert "nancun" in problem.reason
    assert UNIT in problem.reason
    assert exc.event_type == FILED


def test_a_township_outside_the_jurisdiction_in_a_batch_makes_the_whole_batch_403_naming_its_index() -> None:
    docs = [event(subject="SL-1"), with_data(event(subject="SL-2"), township="nancun")]

    exc = refusal(docs, BATCH)

    assert (exc.status, exc.reason) == (403, "township_not_permitted")
    assert [(p.field, p.index) for p in exc.problems] == [("data.township", 1)]


@pytest.mark.parametrize("township", sorted(DIRECTORY.townships))
def test_a_district_department_may_file_a_case_in_any_township(township: str) -> None:
    department = DIRECTORY.units[DISTRICT_UNIT]
    assert department.kind == "department"
    assert department.jurisdiction == set(DIRECTORY.townships)
    doc = with_data(event(source=DISTRICT_UNIT), township=township, handling_unit=DISTRICT_UNIT)

    [envelope] = parse(doc, unit=DISTRICT_UNIT)

    assert (envelope.type, envelope.source) == (FILED, DISTRICT_UNIT)
    assert envelope.data["township"] == township


# --- batches ------------------------------------------------------------------------------------


def test_a_batch_with_one_bad_event_is_rejected_whole() -> None:
    docs = [
        event(subject="SL-1"),
        with_data(event(subject="SL-2"), drop=("township",)),
        event(subject="SL-3"),
    ]

    exc = refusal(docs, BATCH)

    assert (exc.status, exc.reason) == (422, "invalid_event")
    assert exc.problems == [FieldProblem("data.township", "required field missing", 1)]


def test_every_bad_event_in_a_batch_is_listed_with_its_index() -> None:
    docs = [event(id="nope"), event(), event(time="2026-11-29T10:00:00"), "not an event", event(type="x")]

    exc = refusal(docs, BATCH)

    assert exc.status == 422
    assert [(p.field, p.index) for p in exc.problems] == [("id", 0), ("time", 2), ("event", 3), ("type", 4)]
    assert exc.event_type == FILED


def test_a_valid_batch_returns_every_envelope_in_order() -> None:
    docs = [event("filed", "SL-7"), event("decided", "SL-7"), event("closed", "SL-7"), event("filed", "SL-8")]

    envelopes = parse(docs, BATCH)

    assert [(e.id, e.type, e.subject) for e in envelopes] == [
        (d["id"], d["type"], d["subject"]) for d in docs
    ]
    assert [e.type for e in envelopes] == [FILED, DECIDED, CLOSED, FILED]


def test_duplicates_in_a_batch_are_both_returned() -> None:
    doc = event()

    envelopes = parse([doc, doc], BATCH)

    assert len(envelopes) == 2
    assert envelopes[0] == envelopes[1]
    assert envelopes[0].id == doc["id"]
