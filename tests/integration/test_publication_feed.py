"""The publication feed (执法公示) as JSON and Atom: published decisions only, personal data masked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from events.serde import EventCodec
from services.api.app import create_app
from services.settings import Settings
from tests.projector_kit import projector, records
from tests.support import case_event, catalog_event

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
ATOM = "{http://www.w3.org/2005/Atom}"


async def test_the_feed_lists_published_decisions_masked_and_drops_withdrawn_ones(
    engine: AsyncEngine, codec: EventCodec, store_url: str, tmp_path: Path
) -> None:
    filed = dict(case_event("filed", "PUB-1").data, title="张三违法建设，电话13812345678")
    events = [
        case_event("filed", "PUB-1", time_=T0, data=filed),
        case_event("decided", "PUB-1", time_=T0 + timedelta(days=10)),
        catalog_event("case.published.v1", "PUB-1", time_=T0 + timedelta(days=12)),
        case_event("filed", "PUB-2", time_=T0),
        case_event("decided", "PUB-2", time_=T0 + timedelta(days=10)),
        catalog_event("case.published.v1", "PUB-2", time_=T0 + timedelta(days=12)),
        catalog_event("case.publication_withdrawn.v1", "PUB-2", time_=T0 + timedelta(days=40)),
        case_event("filed", "PUB-3", time_=T0),
    ]
    await projector(engine, codec).process(records(codec, events))
    app = create_app(
        Settings.from_env({"LIANDONG_DATA_DIR": str(tmp_path), "LIANDONG_DATABASE_URL": store_url}),
        "127.0.0.1:1",
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client,
    ):
        items = (await client.get("/v1/publications")).json()["items"]
        atom = await client.get("/v1/publications.atom", params={"township": "shilou"})
    assert [i["case_id"] for i in items] == ["PUB-1"]
    assert items[0]["title"] == "张三违法建设，电话138****5678"
    assert items[0]["fine_amount_fen"] == 500_000
    assert atom.headers["content-type"].startswith("application/atom+xml")
    feed = ET.fromstring(atom.content)
    entries = feed.findall(f"{ATOM}entry")
    assert len(entries) == 1
    assert "13812345678" not in atom.text
    assert "5000.00 元" in (entries[0].findtext(f"{ATOM}summary") or "")
