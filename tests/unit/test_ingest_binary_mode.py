"""Binary mode of the CloudEvents HTTP binding: attributes in `ce-` headers, data in the body."""

from __future__ import annotations

import json

import pytest

from connectors.http_gateway.ingest import IngestRejected, Limits, parse_request
from events.catalog import Catalog
from events.directory import Directory
from tests.support import case_event, cloudevent_json

UNIT = "shilou.enforcement-office"
CATALOG, DIRECTORY = Catalog.load(), Directory.load()


def binary(**overrides: str) -> tuple[dict[str, str], bytes]:
    doc = cloudevent_json(case_event("filed", "SL-BIN-1"))
    headers = {f"ce-{k}": str(v) for k, v in doc.items() if k not in ("data", "datacontenttype")}
    headers.update(overrides)
    return headers, json.dumps(doc["data"], ensure_ascii=False).encode()


def parse(content_type: str | None, headers: dict[str, str], body: bytes) -> list[object]:
    return list(parse_request(content_type, body, UNIT, CATALOG, DIRECTORY, Limits(), headers))


def test_a_binary_event_is_read_from_its_headers_and_body() -> None:
    headers, body = binary()
    [event] = parse("application/json; charset=utf-8", headers, body)
    assert (event.subject, event.source, event.data["township"]) == ("SL-BIN-1", UNIT, "shilou")  # type: ignore[attr-defined]


def test_a_binary_event_without_a_content_type_is_read_as_json() -> None:
    headers, body = binary()
    assert len(parse(None, headers, body)) == 1


def test_percent_encoded_header_values_are_decoded() -> None:
    headers, body = binary(**{"ce-time": "2026-11-29T10%3A00%3A00%2B08%3A00"})
    [event] = parse("application/json", headers, body)
    assert event.time.isoformat() == "2026-11-29T02:00:00+00:00"  # type: ignore[attr-defined]


def test_binary_mode_with_data_that_is_not_json_is_refused_with_415() -> None:
    headers, body = binary()
    with pytest.raises(IngestRejected) as caught:
        parse("text/plain", headers, body)
    assert caught.value.status == 415


def test_a_missing_ce_header_is_named_like_a_missing_attribute() -> None:
    headers, body = binary()
    del headers["ce-subject"]
    with pytest.raises(IngestRejected) as caught:
        parse("application/json", headers, body)
    assert (caught.value.status, caught.value.problems[0].field) == (422, "subject")


def test_a_ce_data_header_is_refused_because_binary_data_travels_in_the_body() -> None:
    headers, body = binary(**{"ce-data": "{}"})
    with pytest.raises(IngestRejected) as caught:
        parse("application/json", headers, body)
    assert caught.value.status == 400
