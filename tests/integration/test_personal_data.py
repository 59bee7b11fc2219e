"""Parties' personal data: encrypted at rest under a key per party, shown in clear only to readers
entitled to it, masked for the others, absent from the public feed, and erased by deleting the key
(crypto-shredding) while the audit chain still verifies."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from events.clock_rules import ClockRules
from events.directory import Directory
from events.envelope import Envelope
from events.mechanisms import Mechanisms
from events.serde import EventCodec
from projections import pii
from projections.archive_store import verify
from projections.hub import hub_projections
from projections.runtime import Projector
from services.api.access import Viewer
from services.api.app import create_app
from services.api.pii import entitled
from services.settings import Settings
from tests.integration.test_audit_archive import kit_projections
from tests.projector_kit import CALENDAR, CLOCK_SETTINGS, ListDeadLetters, SettableIncarnation, records
from tests.support import REPO, catalog_event, reader_headers

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=30)
MASTER_KEY = bytes(range(100, 132))
TOKEN_SECRET = bytes(range(32))
OFFICE = "shilou.enforcement-office"
MARKET = "shilou.market-supervision-office"
PERSON = {
    "party_name": "欧阳明轩",
    "party_id_number": "440113199001011234",
    "party_phone": "13912345678",
    "party_address": "广州市番禺区石楼镇岳溪村大街9号",
}
SHOP_OWNER = {
    "party_name": "司马青云",
    "party_phone": "13787654321",
    "party_address": "广州市番禺区石楼镇茭塘东村8号",
}
OTHERS = {
    "reporter_name": "诸葛晓岚",
    "reporter_phone": "13611112222",
    "complainant_name": "上官雨桐",
    "complainant_phone": "13533334444",
    "supervisor_name": "东方景行",
    "plaintiff_name": "慕容子墨",
    "applicant_name": "令狐安然",
}
PLAINTEXTS = [*PERSON.values(), *SHOP_OWNER.values(), *OTHERS.values()]


def events() -> list[Envelope]:
    def filed(case_id: str, unit: str, when: datetime, person: Mapping[str, str]) -> Envelope:
        return catalog_event(
            "case.filed.v1",
            case_id,
            source=unit,
            time_=when,
            township="shilou",
            handling_unit=unit,
            title="占道经营",
            **{"party_id_number": None, **person},
        )

    return [
        filed("PD1", OFFICE, T0, PERSON),
        filed("PD2", MARKET, T0 + timedelta(days=5), SHOP_OWNER),
        catalog_event(
            "case.lead_received.v1",
            "PD1",
            time_=T0,
            township="shilou",
            reporter_name=OTHERS["reporter_name"],
            reporter_phone=OTHERS["reporter_phone"],
        ),
        catalog_event("case.lawsuit_filed.v1", "PD1", time_=T0, plaintiff_name=OTHERS["plaintiff_name"]),
        catalog_event(
            "case.reconsideration_filed.v1", "PD1", time_=T0, applicant_name=OTHERS["applicant_name"]
        ),
        catalog_event(
            "complaint.received.v1",
            "T-1",
            time_=T0,
            complainant_name=OTHERS["complainant_name"],
            complainant_phone=OTHERS["complainant_phone"],
        ),
        catalog_event(
            "public_supervisor.report_filed.v1", "S-1", time_=T0, supervisor_name=OTHERS["supervisor_name"]
        ),
        catalog_event("case.published.v1", "PD1", time_=T0 + timedelta(days=1), personal_data_masked=True),
    ]


def hub(engine: AsyncEngine, codec: EventCodec, master_key: bytes | None = None) -> Projector:
    # "now" a month on: a party's retention clock runs from the event naming it (never the future).
    projections = hub_projections(
        Mechanisms.load(), ClockRules.load(), CALENDAR, CLOCK_SETTINGS, lambda: NOW, master_key=master_key
    )
    return Projector(engine, "hub", codec, projections, ListDeadLetters(), SettableIncarnation())


async def everything(engine: AsyncEngine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the store, by table."""
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        else:
            query = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        names = [str(n) for n in (await conn.execute(text(query))).scalars()]
        return {n: [tuple(r) for r in await conn.execute(text(f'SELECT * FROM "{n}"'))] for n in names}


def as_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="ignore")
    return str(value)


async def test_no_column_of_any_table_holds_a_partys_name_id_number_phone_or_address(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    projector = Projector(engine, "hub", codec, kit_projections(), ListDeadLetters(), SettableIncarnation())
    await projector.process(records(codec, events()))

    tables = await everything(engine)
    assert len(tables["archive"]) == len(events())
    assert len(tables["parties"]) == 7  # PD1: party, reporter, plaintiff, applicant; PD2; complaint; report
    leaks = [
        (table, value)
        for table, rows in tables.items()
        for row in rows
        for cell in row
        for value in PLAINTEXTS
        if value in as_text(cell)
    ]
    assert leaks == []
    # The scan reads what it should: the case title, plain text beside the parties, is found.
    assert any("占道经营" in as_text(cell) for row in tables["cases"] for cell in row)
    # …and the data is there, sealed: the store's own key opens it.
    async with engine.connect() as conn:
        key = await pii.stored_master_key(conn, None)
    assert key is not None


async def test_a_process_started_with_another_master_key_stops_instead_of_mixing_keys(
    engine: AsyncEngine, codec: EventCodec
) -> None:
    await hub(engine, codec).process(records(codec, events()[:1]))  # the store's generated key
    with pytest.raises(pii.MasterKeyMismatch, match="LIANDONG_MASTER_KEY"):
        await hub(engine, codec, MASTER_KEY).process(records(codec, events()[1:2], start=1))


# --- readers -------------------------------------------------------------------------------------


def viewer(role: str, unit: str = OFFICE, townships: tuple[str, ...] = ("shilou",)) -> Viewer:
    return Viewer(unit, "", "", "", role, townships)  # type: ignore[arg-type]


def test_who_reads_personal_data_in_clear() -> None:
    case = ("shilou", OFFICE)
    assert entitled(viewer("district", "district.justice-bureau", ()), *case)
    assert entitled(viewer("township"), *case)
    assert not entitled(viewer("township", "shiqiao.enforcement-office", ("shiqiao",)), *case)
    assert entitled(viewer("unit", OFFICE), *case)
    assert not entitled(viewer("unit", "shilou.police-station"), *case)  # sees the case, does not handle it
    assert not entitled(viewer("auditor", "district.justice-bureau"), *case)
    assert not entitled(viewer("public", ""), *case)


@dataclass
class Hub:
    url: str
    env: dict[str, str]
    now_file: Path
    client: httpx.AsyncClient
    engine: AsyncEngine

    async def key(self, unit: str) -> dict[str, str]:
        return await reader_headers(self.url, unit)

    def token(self, role: str, unit: str = "district.justice-bureau") -> dict[str, str]:
        from services.tokens import issue_token

        token, _ = issue_token(TOKEN_SECRET, Directory.load(), unit=unit, role=role, person=f"{role}-01")  # type: ignore[arg-type]
        return {"Authorization": f"Bearer {token}"}

    async def parties(self, headers: Mapping[str, str], case_id: str = "PD1") -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/cases/{case_id}", headers=dict(headers))
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["parties"]
        return found

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            env={**os.environ, **self.env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
async def hub_api(
    engine: AsyncEngine, codec: EventCodec, store_url: str, tmp_path: Path
) -> AsyncIterator[Hub]:
    now_file = tmp_path / "now.txt"
    now_file.write_text(T0.isoformat(), encoding="utf-8")
    env = {
        "LIANDONG_DATA_DIR": str(tmp_path),
        "LIANDONG_DATABASE_URL": store_url,
        "LIANDONG_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
        "LIANDONG_TOKEN_SECRET": base64.b64encode(TOKEN_SECRET).decode(),
        "LIANDONG_TIME_SOURCE": f"file:{now_file}",
    }
    await hub(engine, codec, MASTER_KEY).process(records(codec, events()))
    app = create_app(Settings.from_env(env), "127.0.0.1:1")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            yield Hub(store_url, env, now_file, client, engine)


def by_kind(parties: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["kind"]: p for p in parties}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_entitled_readers_see_parties_in_clear_and_the_others_masked(hub_api: Hub) -> None:
    clear = by_kind(await hub_api.parties(await hub_api.key("district.justice-bureau")))
    assert set(clear) == {"party", "reporter", "plaintiff", "applicant"}
    party = clear["party"]
    assert {k: party[k] for k in ("name", "id_number", "phone", "address")} == {
        "name": PERSON["party_name"],
        "id_number": PERSON["party_id_number"],
        "phone": PERSON["party_phone"],
        "address": PERSON["party_address"],
    }
    assert (party["masked"], party["erased"], len(party["party_ref"])) == (False, False, 32)
    assert clear["reporter"]["name"] == OTHERS["reporter_name"]
    assert by_kind(await hub_api.parties(await hub_api.key(OFFICE))) == clear  # its township's case

    expected_masked = {
        "name": "欧***",
        "id_number": "440113********1234",
        "phone": "139****5678",
        "address": "广州市番禺区***",
        "masked": True,
        "erased": False,
    }
    for headers in (await hub_api.key("shilou.police-station"), hub_api.token("auditor")):
        masked = by_kind(await hub_api.parties(headers))["party"]
        assert {k: masked[k] for k in expected_masked} == expected_masked
    # The handling agency reads its own case's party; the township's other agency does not.
    market = await hub_api.key(MARKET)
    assert (await hub_api.parties(market, "PD2"))[0]["name"] == SHOP_OWNER["party_name"]
    assert (await hub_api.parties(market, "PD1"))[0]["masked"] is True
    # The public reads no case at all, and the feed carries no party data, not even masked.
    public = hub_api.token("public", "")
    assert (await hub_api.client.get("/v1/cases/PD1", headers=public)).status_code == 403
    feed = await hub_api.client.get("/v1/publications", headers=public)
    assert feed.status_code == 200, feed.text
    assert [e["case_id"] for e in feed.json()["items"]] == ["PD1"]
    for value in [*PLAINTEXTS, "欧***", "440113********1234", "139****5678"]:
        assert value not in feed.text
    assert "party" not in feed.text


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_the_chain_head_is_served_to_auditors_and_the_district_only(hub_api: Hub) -> None:
    verdict = await verify(hub_api.engine)
    assert verdict.head is not None
    for headers in (await hub_api.key("district.justice-bureau"), hub_api.token("auditor")):
        response = await hub_api.client.get("/v1/audit/head", headers=headers)
        assert response.status_code == 200, response.text
        assert (response.json()["seq"], response.json()["hash"]) == (verdict.head.seq, verdict.head.hash)
    for headers in (await hub_api.key(OFFICE), await hub_api.key(MARKET), hub_api.token("public", "")):
        response = await hub_api.client.get("/v1/audit/head", headers=headers)
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_erasing_a_person_or_shredding_after_retention_erases_them_and_the_chain_still_verifies(
    hub_api: Hub, codec: EventCodec
) -> None:
    district = await hub_api.key("district.justice-bureau")
    before = await verify(hub_api.engine)

    erased = hub_api.cli("parties", "erase", "--id-number", PERSON["party_id_number"].lower())
    assert erased.returncode == 0, erased.stderr
    assert PERSON["party_id_number"] not in erased.stdout + erased.stderr
    party = by_kind(await hub_api.parties(district))["party"]
    assert party["erased"] is True
    assert party["party_ref"].startswith("erased-")
    assert [party[k] for k in ("name", "id_number", "phone", "address")] == [None] * 4
    assert by_kind(await hub_api.parties(district))["reporter"]["erased"] is False  # another person
    again = hub_api.cli("parties", "erase", "--id-number", PERSON["party_id_number"])
    assert again.returncode == 1

    # Retention: PD1's people were last named at T0, PD2's owner at T0 + 5 days.
    hub_api.now_file.write_text((T0 + timedelta(days=12)).isoformat(), encoding="utf-8")
    shredded = hub_api.cli("parties", "shred", "--older-than-days", "10")
    assert shredded.returncode == 0, shredded.stderr
    assert (
        "shredded 5 party key(s)" in shredded.stdout
    )  # reporter, plaintiff, applicant, complainant, supervisor
    assert all(p["erased"] for p in await hub_api.parties(district))
    assert (await hub_api.parties(district, "PD2"))[0]["erased"] is False

    # The archive was not touched: the chain verifies, up to the head noted before.
    after = await verify(hub_api.engine, expect_head=before.head.hash if before.head else None)
    assert (after.broken, after.records) == (None, before.records)

    # The person comes back in a new case: a new key; the erased data stays erased.
    back = catalog_event(
        "case.filed.v1",
        "PD3",
        source=OFFICE,
        time_=T0 + timedelta(days=12),
        township="shilou",
        handling_unit=OFFICE,
        **PERSON,
    )
    await hub(hub_api.engine, codec, MASTER_KEY).process(records(codec, [back], start=100))
    assert (await hub_api.parties(district, "PD3"))[0]["name"] == PERSON["party_name"]
    assert by_kind(await hub_api.parties(district))["party"]["erased"] is True


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_an_api_started_with_the_wrong_master_key_answers_503_and_shows_nothing(hub_api: Hub) -> None:
    wrong = {**hub_api.env, "LIANDONG_MASTER_KEY": base64.b64encode(bytes(32)).decode()}
    app = create_app(Settings.from_env(wrong), "127.0.0.1:1")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            headers = await hub_api.key("district.justice-bureau")
            response = await client.get("/v1/cases/PD1", headers=headers)
    assert response.status_code == 503
    assert response.json()["type"] == "urn:liandong:problem:personal-data-unavailable"
    assert not any(value in response.text for value in PLAINTEXTS)
