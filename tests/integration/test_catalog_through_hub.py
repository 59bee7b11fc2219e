"""Every event type of the catalog through the real gateway, broker and worker into PostgreSQL."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from events.catalog import Catalog
from events.directory import Directory
from events.ids import uuid7
from events.samples import SampleContext, sample_data
from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import anomalies, cases, directory_units, event_history, matters
from services.api.app import create_app
from services.embedded_broker import EmbeddedBroker
from services.keys import issue_key
from services.settings import Settings
from tests.processes import Workers
from tests.support import reader_headers, wait_for

BATCH = "application/cloudevents-batch+json"
TOWNSHIP = "shilou"
# The hub publishes these itself: the directory from its file, alerts from its clocks, anomalies
# from its analysis; an acknowledgement is a command of the API (tested in test_clock_workers.py).
UNPUBLISHABLE = ("directory.", "alert.", "anomaly.")


def publisher_for(directory: Directory, event_type: str) -> str:
    """A unit that may publish `event_type` about TOWNSHIP; township offices before district bodies."""
    ranked = sorted(directory.units.values(), key=lambda u: (u.home_township != TOWNSHIP, u.id))
    for unit in ranked:
        if unit.may_publish(event_type) and unit.covers(TOWNSHIP):
            return unit.id
    raise AssertionError(f"no unit in the directory may publish {event_type} about {TOWNSHIP}")


def cloudevent(event_type: str, source: str, subject: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid7()),
        "source": source,
        "type": event_type,
        "subject": subject,
        "time": "2026-11-30T09:30:00+08:00",
        "data": data,
    }


@asynccontextmanager
async def hub(
    broker: str, pg_url: str, tmp_path: Path, units: set[str]
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    engine = make_engine(pg_url)
    try:
        await upgrade(engine)
        keys = {unit: await issue_key(engine, Directory.load(), unit) for unit in sorted(units)}
    finally:
        await engine.dispose()
    app = create_app(
        Settings.from_env({"LIANDONG_DATA_DIR": str(tmp_path), "LIANDONG_DATABASE_URL": pg_url}), broker
    )
    auth = await reader_headers(pg_url)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hub", headers=auth
        ) as client,
    ):
        yield client, keys


async def post(client: httpx.AsyncClient, key: str, events: list[dict[str, Any]]) -> httpx.Response:
    return await client.post(
        "/v1/events",
        content=json.dumps(events, ensure_ascii=False).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": BATCH},
    )


async def test_every_event_type_travels_from_the_gateway_into_the_projections(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, workers: Workers
) -> None:
    catalog, directory = Catalog.load(), Directory.load()
    by_publisher: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for kind in catalog:
        if kind.short_type.startswith(UNPUBLISHABLE):
            continue
        source = publisher_for(directory, kind.type)
        ctx = SampleContext(township=TOWNSHIP, unit=source, other_unit="shilou.police-station")
        subject = f"ALL-{kind.short_type}"
        by_publisher[source].append(cloudevent(kind.type, source, subject, sample_data(kind.latest, ctx)))
    sent = [e for events in by_publisher.values() for e in events]
    hub_only = [k for k in catalog if k.short_type.startswith(UNPUBLISHABLE)]
    assert len(sent) == len(catalog.kinds) - len(hub_only) == 72

    async with hub(fresh_broker.bootstrap, pg_url, tmp_path, set(by_publisher)) as (client, keys):
        for source, events in by_publisher.items():
            response = await post(client, keys[source], events)
            assert response.status_code == 202, (source, response.text)
        workers.start(fresh_broker.bootstrap)
        engine = make_engine(pg_url)
        try:
            await _assert_projected(engine, catalog, directory, sent, workers)
        finally:
            await engine.dispose()

        # The query API serves what the projections hold.
        transfer = (await client.get("/v1/matters/transfer/ALL-transfer.requested.v1")).json()
        assert transfer["open"] is True
        assert "shilou.police-station" in transfer["parties"]
        decided = (await client.get("/v1/cases/ALL-case.decided.v2")).json()
        assert [a["kind"] for a in decided["anomalies"] if a["open"]] == ["out_of_order"]
        units = (await client.get("/v1/directory/units")).json()["items"]
        assert {u["unit_id"] for u in units} == set(directory.units)


async def _assert_projected(
    engine: AsyncEngine, catalog: Catalog, directory: Directory, sent: list[dict[str, Any]], workers: Workers
) -> None:
    ids = {e["id"] for e in sent}

    async def all_in_history() -> bool:
        workers.assert_running()
        async with engine.connect() as conn:
            stored = set((await conn.execute(select(event_history.c.event_id))).scalars())
        return ids <= stored

    await wait_for(all_in_history, 90, f"all {len(ids)} events in the event history")

    async def directory_projected() -> bool:
        async with engine.connect() as conn:
            return await conn.scalar(select(func.count()).select_from(directory_units)) == len(
                directory.units
            )

    await wait_for(directory_projected, 30, "the directory the worker published at start")
    async with engine.connect() as conn:
        case_rows = set((await conn.execute(select(cases.c.case_id))).scalars())
        matter_rows = {
            (r.area, r.subject_id) for r in await conn.execute(select(matters.c.area, matters.c.subject_id))
        }
        flagged = {
            (r.subject, r.kind) for r in await conn.execute(select(anomalies.c.subject, anomalies.c.kind))
        }
    for event in sent:
        area = event["type"].split(".")[3]
        if area == "case":
            assert event["subject"] in case_rows, event["type"]
        else:
            assert (area, event["subject"]) in matter_rows, event["type"]
    # Each type was sent alone on its own subject: the ones that expect a predecessor are flagged,
    # the ones that may come first are not.
    assert ("ALL-case.decided.v2", "out_of_order") in flagged
    assert ("ALL-transfer.received.v1", "out_of_order") in flagged
    assert not any(subject == "ALL-case.filed.v1" for subject, _ in flagged)
    assert not any(subject == "ALL-transfer.requested.v1" for subject, _ in flagged)


async def test_only_parties_or_units_covering_the_township_may_speak_about_a_matter(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, workers: Workers
) -> None:
    office, receiver, outsider = "shilou.enforcement-office", "nancun.police-station", "dashi.police-station"
    catalog = Catalog.load()

    def event(short_type: str, source: str, **data: Any) -> dict[str, Any]:
        kind = catalog.get("cn.gov.liandong." + short_type)
        ctx = SampleContext(township=TOWNSHIP, unit=source, other_unit=receiver)
        return cloudevent(kind.type, source, "TR-SCOPE-1", {**sample_data(kind.latest, ctx), **data})

    async with hub(fresh_broker.bootstrap, pg_url, tmp_path, {office, receiver, outsider}) as (client, keys):
        requested = event("transfer.requested.v1", office, to_unit=receiver)
        assert (await post(client, keys[office], [requested])).status_code == 202
        workers.start(fresh_broker.bootstrap)

        async def matter_known() -> bool:
            workers.assert_running()
            return (await client.get("/v1/matters/transfer/TR-SCOPE-1")).status_code == 200

        await wait_for(matter_known, 60, "the transfer to be projected")
        refused = await post(client, keys[outsider], [event("transfer.accepted.v1", outsider)])
        assert refused.status_code == 403
        assert refused.json()["type"] == "urn:liandong:problem:township-not-permitted"
        assert refused.json()["errors"][0]["field"] == "subject"
        # The receiver sits in another township, but it is a party to the transfer.
        accepted = await post(client, keys[receiver], [event("transfer.accepted.v1", receiver)])
        assert accepted.status_code == 202, accepted.text
