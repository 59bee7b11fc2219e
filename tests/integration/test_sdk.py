"""The Kafka-native SDK: the README's example runs as written, and validation matches the gateway."""

from __future__ import annotations

import re
from typing import Any

import pytest

from connectors.sdk import InvalidEvent, LiandongClient, event_id_for
from events.catalog import Catalog, topic_for
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from services.embedded_broker import EmbeddedBroker
from tests.integration.test_gateway_http import records_with_ids
from tests.support import REPO


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Publish straight to Kafka", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README lost its SDK example"
    return match.group(1)


async def test_the_readme_example_publishes_an_event_the_hub_can_decode(fresh_broker: EmbeddedBroker) -> None:
    code = readme_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 11
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    await namespace["main"](fresh_broker.bootstrap)
    expected_id = event_id_for("shilou.enforcement-office", "案件台账-0002")
    found = await records_with_ids(fresh_broker.bootstrap, [expected_id])
    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    record = found[expected_id]
    event = codec.decode(record.value, record.headers)
    assert (event.subject, event.data["title"], record.topic) == (
        "SL-2026-0002",
        "未批先建",
        topic_for("case"),
    )


async def test_the_sdk_refuses_what_the_gateway_refuses_naming_the_field() -> None:
    client = LiandongClient("127.0.0.1:1", unit="shilou.police-station")
    with pytest.raises(InvalidEvent) as not_permitted:
        client.event("case.filed.v1", subject="X-1", data={})
    assert not_permitted.value.problems[0][0] == "type"
    office = LiandongClient("127.0.0.1:1", unit="shilou.enforcement-office")
    with pytest.raises(InvalidEvent) as bad_data:
        office.event("case.filed.v1", subject="X-1", data={"township": "shilou"})
    assert bad_data.value.problems[0][0] == "data.category"
    with pytest.raises(InvalidEvent) as elsewhere:
        office.event(
            "case.filed.v1",
            subject="X-1",
            data={
                "township": "nancun",
                "category": "c",
                "handling_unit": "shilou.enforcement-office",
                "title": "t",
            },
        )
    assert elsewhere.value.problems[0][0] == "data.township"


def test_the_same_record_always_gives_the_same_event_id() -> None:
    assert event_id_for("u", "row-1") == event_id_for("u", "row-1") != event_id_for("u", "row-2")
    with pytest.raises(InvalidEvent):
        LiandongClient("127.0.0.1:1", unit="nowhere.unit")
