"""The processes' logs, as an operator's log shipper reads them: every stderr line of the API
(uvicorn included) and the worker (faust, mode and aiokafka included) is one JSON object; a line
about an event carries its event id, subject and unit; no line holds a secret or personal data.

One API and one worker against their own broker and database, shared by the assertions below: the
fixture makes the events happen, stops both processes (so their shutdown lines count too) and hands
over what they wrote.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from connectors.kafka.publisher import KafkaPublisher
from events.catalog import Catalog, topic_for
from events.directory import Directory
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import event_history
from services.embedded_broker import EmbeddedBroker, free_port
from services.keys import issue_key
from services.tokens import issue_token
from tests.support import (
    case_event,
    cloudevent_json,
    create_pg_database,
    drop_pg_database,
    liandong,
    wait_for,
)

pytestmark = pytest.mark.integration

OFFICE = "shilou.enforcement-office"
OTHER_OFFICE = "shiqiao.enforcement-office"  # does not cover shilou
TOKEN_SECRET = bytes(range(7, 39))
MASTER_KEY = bytes(range(150, 182))
DB_PASSWORD = "Pw-9f3kQz7LmX2vR"
PERSON = {"party_name": "欧阳明轩", "party_id_number": "440113199001011234", "party_phone": "13912345678"}
FORGED_PERSON = {
    "party_name": "司马青云",
    "party_id_number": "44011319850505432X",
    "party_phone": "13787654321",
}
REQUIRED = ("ts", "level", "logger", "msg", "process", "pid")
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def filed_data(**party: str) -> dict[str, Any]:
    return {
        "township": "shilou",
        "category": "illegal_construction",
        "handling_unit": OFFICE,
        "title": "村民未批先建三层住宅",
        "case_number": None,
        "requires_legal_review": False,
        **party,
    }


@dataclass
class Run:
    """What the two processes wrote, and the values they must (not) have written."""

    stderr: dict[str, list[str]]
    stdout: dict[str, str]
    accepted: dict[str, str]  # the event published through the gateway: id, subject, unit
    forged: dict[str, str]  # the event published straight to the broker, dead-lettered by the gate
    secrets: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, json.loads(line)) for name, lines in self.stderr.items() for line in lines]


def _with_password(url: str) -> str:
    # PostgreSQL here trusts local connections, so any password connects; it must still never be logged.
    scheme, rest = url.split("://", 1)
    userinfo, host = rest.split("@", 1)
    return f"{scheme}://{userinfo}:{DB_PASSWORD}@{host}"


def _start(command: str, env: dict[str, str], tmp: Path) -> subprocess.Popen[bytes]:
    return liandong(
        command,
        env=env,
        stdout=(tmp / f"{command}.out").open("wb"),
        stderr=(tmp / f"{command}.err").open("wb"),
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Run]:
    tmp = tmp_path_factory.mktemp("logs")
    broker = EmbeddedBroker(log_path=tmp / "tansu.log")
    bootstrap = broker.start()
    url = _with_password(await create_pg_database())
    engine = make_engine(url)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        await upgrade(engine)
        key = await issue_key(engine, Directory.load(), OFFICE)
        token, _ = issue_token(
            TOKEN_SECRET, Directory.load(), unit=OFFICE, role="township_office", person="p-7"
        )
        api_port = free_port()
        env = {
            "LIANDONG_KAFKA_BOOTSTRAP": bootstrap,
            "LIANDONG_DATABASE_URL": url,
            "LIANDONG_DATA_DIR": str(tmp / "data"),
            "LIANDONG_TOPIC_PARTITIONS": "1",
            "LIANDONG_TOKEN_SECRET": base64.b64encode(TOKEN_SECRET).decode(),
            "LIANDONG_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
            "LIANDONG_WORKER_WEB_PORT": str(free_port()),
            "LIANDONG_API_PORT": str(api_port),
        }
        # The API at DEBUG: its per-event "accepted" lines, and every library's chatter, are checked too.
        api = _start("api", {**env, "LIANDONG_LOG_LEVEL": "DEBUG"}, tmp)
        worker = _start("worker", env, tmp)
        processes += [api, worker]
        base = f"http://127.0.0.1:{api_port}"

        async with httpx.AsyncClient(base_url=base, timeout=10) as client:

            async def api_up() -> bool:
                assert api.poll() is None, (tmp / "api.err").read_text()[-3000:]
                return (await client.get("/healthz")).status_code == 200

            await wait_for(api_up, 20, "the API to answer")

            def post(doc: Any, credential: str) -> Any:
                return client.post(
                    "/v1/events",
                    content=json.dumps(doc, ensure_ascii=False).encode(),
                    headers={
                        "Content-Type": "application/cloudevents+json",
                        "Authorization": f"Bearer {credential}",
                    },
                )

            accepted = case_event("filed", "LOG-A-1", data=filed_data(**PERSON))
            assert (await post(cloudevent_json(accepted), key)).status_code == 202
            # A gateway refusal of an authenticated unit: an event in another unit's name.
            impostor = case_event("filed", "LOG-G-1", source=OTHER_OFFICE, data=filed_data(**PERSON))
            assert (await post(cloudevent_json(impostor), key)).status_code == 403
            # A person's token cannot publish; a wrong key secret is refused; secrets in a query string.
            assert (await post(cloudevent_json(accepted), token)).status_code == 403
            wrong = key.rsplit("_", 1)[0] + "_" + "x" * 43
            assert (await post(cloudevent_json(accepted), wrong)).status_code == 401
            leaked = await client.get("/v1/cases", params={"key": key, "token": token})
            assert leaked.status_code == 401

        # Straight to the broker, bypassing the gateway: the worker's gate dead-letters it.
        forged = case_event("filed", "LOG-F-1", source=OTHER_OFFICE, data=filed_data(**FORGED_PERSON))
        codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
        await codec.prepare()
        publisher = KafkaPublisher(bootstrap)
        try:
            await publisher.publish([(topic_for(forged.area), codec.encode(forged))])
        finally:
            await publisher.close()

        async def projected() -> bool:
            assert worker.poll() is None, (tmp / "worker.err").read_text()[-3000:]
            async with engine.connect() as conn:
                found = await conn.scalar(
                    select(event_history.c.event_id).where(event_history.c.event_id == accepted.id)
                )
            return found is not None

        await wait_for(projected, 25, "the worker to project the accepted event")

        async def dead_lettered() -> bool:
            return forged.id in (tmp / "worker.err").read_text(encoding="utf-8")

        await wait_for(dead_lettered, 10, "the worker to log the forged record's dead letter")
        for process in processes:
            _stop(process)
        yield Run(
            stderr={
                name: (tmp / f"{name}.err").read_text(encoding="utf-8").splitlines()
                for name in ("api", "worker")
            },
            stdout={name: (tmp / f"{name}.out").read_text(encoding="utf-8") for name in ("api", "worker")},
            accepted={"event_id": accepted.id, "subject": accepted.subject, "unit": accepted.source},
            forged={"event_id": forged.id, "subject": forged.subject, "unit": forged.source},
            secrets={
                "api key secret": key.rsplit("_", 1)[1],
                "token": token,
                "token signature": token.rsplit(".", 1)[1],
                "database password": DB_PASSWORD,
                "token secret": base64.b64encode(TOKEN_SECRET).decode(),
                "master key": base64.b64encode(MASTER_KEY).decode(),
                **{f"{k} of the accepted event": v for k, v in PERSON.items()},
                **{f"{k} of the forged event": v for k, v in FORGED_PERSON.items()},
            },
        )
    finally:
        for process in processes:
            _stop(process)
        await engine.dispose()
        await drop_pg_database(url)
        broker.stop()


def test_every_stderr_line_is_one_json_object_with_the_contract_fields(run: Run) -> None:
    for name, lines in run.stderr.items():
        assert len(lines) >= 5, f"{name} logged almost nothing: {lines}"
        for line in lines:
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{name} wrote a line that is not JSON: {line!r}")
            assert isinstance(doc, dict), line
            missing = [f for f in REQUIRED if f not in doc]
            assert not missing, f"{name}: {missing} missing in {line}"
            assert doc["process"] == name, line
            assert TS.match(doc["ts"]), line
            assert doc["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), line
    # Nothing went around the logger to stdout (faust's own output, uvicorn's banner).
    assert run.stdout == {"api": "", "worker": ""}


def test_the_libraries_lines_are_json_too(run: Run) -> None:
    loggers = {doc["logger"].split(".")[0] for _, doc in run.lines()}
    assert {"uvicorn", "aiokafka"} <= loggers, loggers
    assert {"faust", "mode"} & loggers, loggers


def test_the_dead_letter_line_carries_the_forged_events_correlation(run: Run) -> None:
    about = [
        doc for name, doc in run.lines() if name == "worker" and doc.get("event_id") == run.forged["event_id"]
    ]
    assert about, "no worker line names the forged event"
    assert any("township_not_permitted" in doc["msg"] for doc in about), about
    for doc in about:
        assert {k: doc.get(k) for k in ("event_id", "subject", "unit")} == run.forged, doc


def test_the_gateway_lines_carry_the_unit_and_the_accepted_event(run: Run) -> None:
    api = [doc for name, doc in run.lines() if name == "api"]
    refused = [doc for doc in api if "forged_source" in doc["msg"]]
    assert refused, "no API line about the forged_source refusal"
    assert all(doc.get("unit") == OFFICE for doc in refused), refused
    needs_key = [doc for doc in api if "needs_unit_key" in doc["msg"]]
    assert needs_key, "no API line about the token that tried to publish"
    assert needs_key[0].get("unit") == OFFICE, needs_key
    accepted = [doc for doc in api if doc.get("event_id") == run.accepted["event_id"]]
    assert accepted, "no API line names the accepted event"
    assert {k: accepted[0].get(k) for k in ("event_id", "subject", "unit")} == run.accepted


def test_the_access_log_masks_secrets_in_query_strings(run: Run) -> None:
    access = [doc["msg"] for name, doc in run.lines() if name == "api" and doc["logger"] == "uvicorn.access"]
    leaked = [m for m in access if "/v1/cases" in m]
    assert leaked, access
    assert "key=***" in leaked[0], leaked[0]
    assert "token=***" in leaked[0], leaked[0]


def test_no_line_holds_a_secret_or_personal_data(run: Run) -> None:
    # The raw lines, and their decoded values (where a backslash is one character again).
    raw = "\n".join([*("\n".join(lines) for lines in run.stderr.values()), *run.stdout.values()])
    decoded = "\n".join(str(value) for _, doc in run.lines() for value in doc.values())
    found = [what for what, value in run.secrets.items() if value in raw or value in decoded]
    assert not found, f"found in the logs: {found}"
    # A name inside a bytes repr (a record's payload) is escaped UTF-8: no mask can read it there.
    names = {PERSON["party_name"], FORGED_PERSON["party_name"]}
    escaped = ["".join(f"\\x{b:02x}" for b in name.encode()) for name in names]
    assert not [e for e in escaped if e in decoded], "a name appears as escaped UTF-8 in a bytes repr"


def test_a_line_is_stamped_in_utc_now(run: Run) -> None:
    first = next(doc for _, doc in run.lines())
    stamped = datetime.fromisoformat(first["ts"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 600
