"""The official CloudEvents Python SDK as the client, in all three modes of the HTTP binding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from events.ids import uuid7
from tests.integration.test_gateway_http import BATCH, Hub, records_with_ids
from tests.integration.test_gateway_http import hub as hub
from tests.support import case_event, cloudevent_json

UNIT = "shilou.enforcement-office"


def sdk_event(subject: str) -> CloudEvent:
    event = case_event("filed", subject, event_id=str(uuid7()))
    doc = cloudevent_json(event)
    attributes = {k: v for k, v in doc.items() if k != "data"}
    attributes["time"] = event.time  # the SDK types time as a datetime
    return CloudEvent(attributes=attributes, data=doc["data"])


async def post(hub: Hub, headers: dict[str, str], body: bytes) -> Any:
    return await hub.client.post(
        "/v1/events", content=body, headers={**headers, "Authorization": f"Bearer {hub.key}"}
    )


async def test_the_sdk_in_binary_mode_is_accepted_and_lands_on_the_broker(hub: Hub, broker: str) -> None:
    event = sdk_event("SDK-BIN-1")
    message = to_binary(event, JSONFormat())
    assert not message.headers.get("content-type", "application/json").startswith("application/cloudevents")
    response = await post(hub, dict(message.headers), message.body)
    assert response.status_code == 202, response.text
    found = await records_with_ids(broker, [event.get_id()])
    headers = dict(found[event.get_id()].headers)
    assert headers["ce_subject"] == b"SDK-BIN-1"
    assert headers["ce_source"] == UNIT.encode()


async def test_the_sdk_in_structured_mode_is_accepted(hub: Hub, broker: str) -> None:
    event = sdk_event("SDK-STR-1")
    message = to_structured(event, JSONFormat())
    assert message.headers["content-type"].startswith("application/cloudevents+json")
    response = await post(hub, dict(message.headers), message.body)
    assert response.status_code == 202, response.text
    assert event.get_id() in await records_with_ids(broker, [event.get_id()])


async def test_a_batch_of_sdk_events_is_accepted(hub: Hub, broker: str) -> None:
    events = [sdk_event(f"SDK-BAT-{i}") for i in range(3)]
    body = json.dumps([json.loads(JSONFormat().write(e)) for e in events]).encode()
    response = await post(hub, {"Content-Type": BATCH}, body)
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 3}
    assert set(await records_with_ids(broker, [e.get_id() for e in events])) == {e.get_id() for e in events}


async def test_binary_mode_with_a_forged_source_header_is_refused_naming_it(hub: Hub, tmp_path: Path) -> None:
    event = sdk_event("SDK-BIN-2")
    message = to_binary(event, JSONFormat())
    headers = {**dict(message.headers), "ce-source": "nancun.enforcement-office"}
    response = await post(hub, headers, message.body)
    assert response.status_code == 403
    assert response.json()["errors"][0]["field"] == "source"


async def test_binary_mode_with_an_unknown_ce_header_is_refused_naming_the_attribute(hub: Hub) -> None:
    message = to_binary(sdk_event("SDK-BIN-3"), JSONFormat())
    response = await post(hub, {**dict(message.headers), "ce-colour": "red"}, message.body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "colour"
