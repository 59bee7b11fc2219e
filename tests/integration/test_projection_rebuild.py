"""`liandong projections rebuild NAME`: shadow tables swapped in while the worker and the API run."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Table, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.kafka.publisher import KafkaPublisher
from events.catalog import Catalog, topic_for
from events.directory import Directory
from events.envelope import Envelope
from events.registry import LocalSchemaRegistry
from events.serde import EventCodec
from projections import schema
from projections.db import make_engine
from projections.migrate import upgrade
from services.embedded_broker import EmbeddedBroker, free_port
from services.rebuild import rebuild
from services.settings import Settings
from services.shadow_rebuild import ProgressBar
from services.store import issue
from tests.integration.test_rebuild import checkpoints, end_offsets
from tests.processes import Workers
from tests.support import (
    case_event,
    catalog_event,
    create_pg_database,
    drop_pg_database,
    liandong,
    plain,
    replay_settings,
    wait_for,
)

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
# A month on: the service and publication clocks of every decision not served or published have
# escalated, so the scanner has raised alerts and recorded them on the clocks.
NOW = T0 + timedelta(days=30)
VIEWER = "district.justice-bureau"
SWAPPED = (
    schema.cases,
    schema.matters,
    schema.matter_parties,
    schema.directory_units,
    schema.file_reviews,
    schema.disputes,
    schema.inspections,
    schema.anomalies,
    schema.clocks,
    schema.alerts,
    schema.alert_recipients,
)
# Stamped by the wall clock of whoever last wrote the row: when, not what.
WALL_CLOCK = {"clocks": {"updated_at"}}
# Reads of the dashboard compared before and after a rebuild (those the API serves in this tree).
FIGURES = (
    "/v1/cases?limit=1000",
    "/v1/matters?limit=1000",
    "/v1/anomalies?limit=1000",
    "/v1/analysis/overview",
    "/v1/analysis/trend?period=month",
    "/v1/analysis/stages?group_by=township",
    "/v1/analysis/load?group_by=township",
    "/v1/analysis/on-time?group_by=rule",
    "/v1/analysis/loops",
    "/v1/analysis/reconsiderations?group_by=township",
    "/v1/analysis/file-reviews?group_by=township",
    "/v1/disputes",
    "/v1/coordination",
    "/v1/publications/register",
)
POLLED = "/v1/cases?limit=200"
SLOW_S = 3.0


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def archive(prefix: str) -> list[Envelope]:
    """Cases at every stage, major decisions without legal review, coordination, inspections of one
    business by two units, a dispute and file reviews: every projection gets rows."""
    events: list[Envelope] = []
    for i in range(24):
        subject = f"{prefix}-C{i:03d}"
        events.append(case_event("filed", subject, time_=at(i * 0.1)))
        if i % 3:
            events.append(case_event("decided", subject, time_=at(i * 0.1 + 2)))
        if i % 3 == 2:
            events.append(case_event("closed", subject, time_=at(i * 0.1 + 3)))
    for i in range(3):
        subject = f"{prefix}-MAJOR{i}"
        major = {**_filed(), "requires_legal_review": True}
        events += [
            case_event("filed", subject, time_=at(i), data=major),
            case_event("decided", subject, time_=at(i + 5)),
        ]
    for i in range(8):
        subject = f"{prefix}-TR{i:03d}"
        receiver = "nancun.police-station"
        events.append(catalog_event("transfer.requested.v1", subject, time_=at(i * 0.1), to_unit=receiver))
        if i % 2:
            events.append(
                catalog_event("transfer.accepted.v1", subject, source=receiver, time_=at(i * 0.1 + 1))
            )
    for i, unit in enumerate(("shilou.police-station", "shilou.market-supervision-office")):
        events.append(
            catalog_event(
                "linkage.inspection_tasked.v1",
                f"{prefix}-INS{i}",
                # Tasking belongs to the market supervision office; the worker's gate refuses others.
                source="shilou.market-supervision-office",
                time_=at(10 + i * 24),
                inspecting_unit=unit,
                business_credit_code=f"91440113{prefix}0001",
                business_name="番禺示例餐饮店",
            )
        )
    events.append(catalog_event("dispute.raised.v1", f"{prefix}-D1", time_=at(4)))
    for i in range(3):
        events.append(
            catalog_event(
                "file_review.scored.v1",
                f"{prefix}-FR{i}",
                source="district.justice-bureau",
                time_=at(6 + i),
                score=60 + 15 * i,
                passed=i > 0,
            )
        )
    return events


def _filed() -> dict[str, Any]:
    return dict(case_event("filed", "x").data)


async def publish(bootstrap: str, events: Sequence[Envelope]) -> None:
    codec = EventCodec(Catalog.load(), LocalSchemaRegistry())
    await codec.prepare()
    publisher = KafkaPublisher(bootstrap, client_id="test-projection-rebuild", partitions=3)
    try:
        await publisher.publish([(topic_for(e.area), codec.encode(e)) for e in events])
    finally:
        await publisher.close()


async def snapshot(
    engine: AsyncEngine, tables: Sequence[Table], skip: dict[str, set[str]]
) -> dict[str, list[tuple[Any, ...]]]:
    """Each table's full contents by primary key, without the columns in `skip`."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for table in tables:
            columns = [c for c in table.c if c.name not in skip.get(table.name, set())]
            query = select(*columns).order_by(*table.primary_key.columns)
            out[table.name] = [tuple(plain(v) for v in row) for row in await conn.execute(query)]
    return out


def settings_for(url: str, tmp_path: Path, bootstrap: str, now_file: Path) -> Settings:
    settings: Settings = replay_settings(url, tmp_path / "data", bootstrap, now_file)
    return settings


def hub_env(url: str, tmp_path: Path, bootstrap: str, now_file: Path) -> dict[str, str]:
    return {
        "LIANDONG_KAFKA_BOOTSTRAP": bootstrap,
        "LIANDONG_DATABASE_URL": url,
        "LIANDONG_DATA_DIR": str(tmp_path / "data"),
        "LIANDONG_TIME_SOURCE": f"file:{now_file}",
        "LIANDONG_TOPIC_PARTITIONS": "3",
    }


def start_rebuild(name: str, env: dict[str, str], tmp_path: Path) -> subprocess.Popen[bytes]:
    return liandong(
        "projections",
        "rebuild",
        name,
        "--batch",
        "100",
        "--progress-interval",
        "0.1",
        env=env,
        stdout=(tmp_path / f"rebuild-{name}.out").open("wb"),
        stderr=(tmp_path / f"rebuild-{name}.err").open("wb"),
    )


async def finished(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    async def exited() -> bool:
        return process.poll() is not None

    await wait_for(exited, timeout_s, "the rebuild to finish")
    return int(process.returncode)


def swapped_counts(out: str) -> dict[str, tuple[int, int]]:
    """table -> (rows written, rows deleted), from the summary."""
    return {
        m[1]: (int(m[2].replace(",", "")), int(m[3].replace(",", "")))
        for m in re.finditer(r"^  (\w+): ([\d,]+) written, ([\d,]+) deleted", out, re.M)
    }


async def caught_up(engine: AsyncEngine, workers: Workers, bootstrap: str) -> None:
    """Wait until the worker has published the directory, then until it has projected everything on
    the topics."""

    async def directory_projected() -> bool:
        workers.assert_running()
        async with engine.connect() as conn:
            units = await conn.scalar(select(func.count()).select_from(schema.directory_units))
        return units == len(Directory.load().units)

    await wait_for(directory_projected, 60, "the worker to project the directory it publishes")
    ends = await end_offsets(bootstrap)

    async def at_the_end() -> bool:
        workers.assert_running()
        return await checkpoints(engine, "hub") == ends

    await wait_for(at_the_end, 60, f"the worker's checkpoints to reach {ends}")


async def quiet(engine: AsyncEngine, workers: Workers, bootstrap: str) -> None:
    """Wait until the scanner and the announcer have nothing left to do, then until the worker has
    projected everything on the topics (including what they published)."""

    async def settled() -> bool:
        workers.assert_running()
        a, c = schema.anomalies.c, schema.clocks.c
        async with engine.connect() as conn:
            unannounced = await conn.scalar(
                select(func.count()).where(
                    a.announced_at.is_(None),
                    a.resolved_at.is_(None),
                    a.category.in_(("three_systems", "risk", "flow")),
                )
            )
            due = await conn.scalar(select(func.count()).where(c.next_check_at <= NOW))
            announced = await conn.scalar(select(func.count()).where(a.announced_at.is_not(None)))
            fired = await conn.scalar(select(func.count()).where(c.fired != ""))
        return unannounced == 0 and due == 0 and bool(announced) and bool(fired)

    await wait_for(settled, 60, "the scanner to raise and the announcer to announce what is due")
    await caught_up(engine, workers, bootstrap)


class Poller:
    """Asks the API, again and again, until stopped: every answer's status and time."""

    def __init__(self, api: str, key: str, paths: Sequence[str]) -> None:
        self.api = api
        self.headers = {"Authorization": f"Bearer {key}"}
        self.paths = paths
        self.answers: list[tuple[str, int, float]] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.api, headers=self.headers, timeout=30) as client:
            while not self.stop.is_set():
                for path in self.paths:
                    started = time.monotonic()
                    response = await client.get(path)
                    self.answers.append((path, response.status_code, time.monotonic() - started))


async def figures(api: str, key: str, paths: Sequence[str]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {key}"}) as client:
        out = {}
        for path in paths:
            response = await client.get(path, timeout=30)
            out[path] = response.json() if response.status_code == 200 else response.status_code
        return out


async def start_api(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = liandong(
        "api",
        env={**env, "LIANDONG_API_PORT": str(port)},
        stdout=(tmp_path / "api.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError((tmp_path / "api.log").read_text()[-3000:])
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{api}/healthz", timeout=2)).status_code == 200

    await wait_for(ready, 30, "the API to answer")
    return process, api


async def damage(engine: AsyncEngine) -> None:
    """What a projection bug might have left: a row wrong, a row lost, a row that should not exist,
    in several tables, including rows with values the scanner and the announcer own."""
    c, k, a, p = schema.cases, schema.clocks, schema.anomalies, schema.matter_parties
    async with engine.begin() as conn:
        first, second = (await conn.execute(select(c.c.case_id).order_by(c.c.case_id).limit(2))).scalars()
        await conn.execute(update(c).where(c.c.case_id == first).values(stage="closed", stage_rank=99))
        await conn.execute(delete(c).where(c.c.case_id == second))
        bogus = {col.name: None for col in c.c} | {
            "case_id": "BOGUS-1",
            "stage": "filed",
            "stage_rank": 1,
            "last_event_at": T0,
            "event_count": 1,
        }
        await conn.execute(insert(c).values(bogus))
        clock = await conn.scalar(select(k.c.clock_id).where(k.c.fired != "").order_by(k.c.clock_id).limit(1))
        await conn.execute(update(k).where(k.c.clock_id == clock).values(deadline=T0, provisional=True))
        anomaly = await conn.scalar(
            select(a.c.anomaly_id).where(a.c.announced_at.is_not(None)).order_by(a.c.anomaly_id).limit(1)
        )
        await conn.execute(update(a).where(a.c.anomaly_id == anomaly).values(detail="damaged"))
        party = (await conn.execute(select(p).order_by(*p.primary_key.columns).limit(1))).one()
        await conn.execute(
            delete(p).where(
                p.c.subject_id == party.subject_id, p.c.area == party.area, p.c.unit_id == party.unit_id
            )
        )


async def test_a_rebuild_swaps_repaired_tables_in_while_the_worker_runs_and_the_api_keeps_answering(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, workers: Workers
) -> None:
    now_file = tmp_path / "now.txt"
    now_file.write_text(NOW.isoformat(), encoding="utf-8")
    env = hub_env(pg_url, tmp_path, fresh_broker.bootstrap, now_file)
    live = make_engine(pg_url)
    await upgrade(live)
    api_process: subprocess.Popen[bytes] | None = None
    try:
        await publish(fresh_broker.bootstrap, archive("RB1"))
        workers.start(fresh_broker.bootstrap, **env, LIANDONG_CLOCK_SCAN_INTERVAL_MS="300")
        key = await issue(settings_for(pg_url, tmp_path, fresh_broker.bootstrap, now_file), VIEWER)
        api_process, api = await start_api(env, tmp_path)
        await quiet(live, workers, fresh_broker.bootstrap)

        expected = await snapshot(live, SWAPPED, WALL_CLOCK)
        assert len(expected["cases"]) == 27
        assert {r[3] for r in expected["anomalies"]} >= {"legal_review_missing", "repeat_inspection"}
        for table in ("file_reviews", "disputes", "inspections"):
            assert expected[table], table
        assert any(r[0].startswith("anomaly:") or r[1].startswith("anomaly:") for r in expected["alerts"])
        before = await figures(api, key, FIGURES)
        served = [path for path, body in before.items() if not isinstance(body, int)]
        assert "/v1/cases?limit=1000" in served
        if importlib.util.find_spec("services.api.analysis") is not None:
            assert "/v1/analysis/overview" in served, before["/v1/analysis/overview"]
        await damage(live)
        assert await snapshot(live, SWAPPED, WALL_CLOCK) != expected

        poller = Poller(api, key, [POLLED, *(p for p in served if p.startswith("/v1/analysis/overview"))])
        polling = asyncio.create_task(poller.run())
        rebuilding = start_rebuild("all", env, tmp_path)
        try:
            code = await finished(rebuilding, 60)
        finally:
            poller.stop.set()
            await polling
        out = (tmp_path / "rebuild-all.out").read_text()
        err = (tmp_path / "rebuild-all.err").read_text()
        assert code == 0, err[-3000:]

        # The API answered all along, and never slowly.
        assert len(poller.answers) >= 5
        assert {status for _, status, _ in poller.answers} == {200}, poller.answers
        assert max(seconds for _, _, seconds in poller.answers) < SLOW_S, poller.answers

        # Only the damaged rows were written; the scanner's levels and the announcement were kept.
        written = swapped_counts(out)
        assert set(written) == {t.name for t in SWAPPED}, out
        assert written["cases"] == (2, 1)
        assert written["clocks"] == (1, 0)
        assert written["anomalies"] == (1, 0)
        assert written["matter_parties"] == (1, 0)
        assert all(
            counts == (0, 0)
            for name, counts in written.items()
            if name not in {"cases", "clocks", "anomalies", "matter_parties"}
        ), written

        # The figures are those from before the damage (the scanner re-checks the repaired clock).
        async def repaired() -> bool:
            workers.assert_running()
            return await snapshot(live, SWAPPED, WALL_CLOCK) == expected

        await wait_for(repaired, 20, "the rebuilt tables to hold the figures from before")
        assert await figures(api, key, served) == {p: before[p] for p in served}

        # Progress on stderr: a bar and an ETA; the shadow schema is gone.
        assert re.search(r"\[#+-*\] +\d+% [\d,]+/[\d,]+ events .* ETA \d+:\d\d", err), err
        async with live.connect() as conn:
            left = await conn.scalar(
                text("SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE :shadows"),
                {"shadows": "liandong_shadow_%"},
            )
        assert left == 0
    finally:
        if api_process is not None:
            api_process.terminate()
            api_process.wait(20)
        await live.dispose()


async def test_events_published_during_a_rebuild_reach_the_swapped_table_once(
    fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path, workers: Workers
) -> None:
    now_file = tmp_path / "now.txt"
    now_file.write_text(T0.isoformat(), encoding="utf-8")
    env = hub_env(pg_url, tmp_path, fresh_broker.bootstrap, now_file)
    live = make_engine(pg_url)
    await upgrade(live)
    reference = await create_pg_database()
    try:
        await publish(fresh_broker.bootstrap, archive("RB2"))
        workers.start(fresh_broker.bootstrap, **env, LIANDONG_CLOCK_SCAN_INTERVAL_MS="3600000")
        await caught_up(live, workers, fresh_broker.bootstrap)
        before_rebuild = sum((await checkpoints(live, "hub")).values())

        rebuilding = start_rebuild("case_registry", env, tmp_path)
        published: list[Envelope] = []
        while rebuilding.poll() is None:
            # New cases, and later facts of cases the shadow replays: both must count once.
            n = len(published)
            more = [
                case_event("filed", f"RB2-LIVE-{n:04d}", time_=at(50)),
                case_event("decided", f"RB2-C{n % 24:03d}", time_=at(60 + n)),
            ]
            await publish(fresh_broker.bootstrap, more)
            published += more
        assert await finished(rebuilding, 1) == 0, (tmp_path / "rebuild-case_registry.err").read_text()[
            -3000:
        ]
        out = (tmp_path / "rebuild-case_registry.out").read_text()
        replayed = int(re.search(r"([\d,]+) records replayed", out)[1].replace(",", ""))  # type: ignore[index]
        assert replayed > before_rebuild, "the shadow caught up with events published during the rebuild"
        assert len(published) >= 4

        await caught_up(live, workers, fresh_broker.bootstrap)
        settings = settings_for(reference, tmp_path, fresh_broker.bootstrap, now_file)
        await rebuild(settings)
        ref = make_engine(reference)
        try:
            want = await snapshot(ref, [schema.cases], {})
        finally:
            await ref.dispose()
        got = await snapshot(live, [schema.cases], {})
        assert got == want
        live_cases = {r[0] for r in got["cases"]}
        assert {e.subject for e in published} <= live_cases
    finally:
        await drop_pg_database(reference)
        await live.dispose()


def test_an_unknown_projection_is_refused_with_exit_code_2_and_the_list_names_the_known_ones(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "LIANDONG_DATA_DIR": str(tmp_path / "data"),
        "LIANDONG_KAFKA_BOOTSTRAP": "127.0.0.1:9",
    }
    cli = [sys.executable, "-m", "services.cli", "projections"]
    done = subprocess.run([*cli, "rebuild", "no_such_projection"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "unknown projection: 'no_such_projection'" in err
    assert "choose one of: case_registry, matters," in err
    assert err.rstrip().endswith(", all")
    listing = subprocess.run([*cli, "list"], env=env, capture_output=True, timeout=60)
    assert listing.returncode == 0
    assert re.search(r"^case_registry +cases$", listing.stdout.decode(), re.M)
    assert re.search(r"^clocks +clocks \(keeps the live fired, withdrawn", listing.stdout.decode(), re.M)


async def test_the_sqlite_store_is_rebuilt_through_an_attached_shadow_file_while_its_worker_runs(
    fresh_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    now_file = tmp_path / "now.txt"
    now_file.write_text(T0.isoformat(), encoding="utf-8")
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    env = hub_env(url, tmp_path, fresh_broker.bootstrap, now_file)
    live = make_engine(url)
    await upgrade(live)
    workers = Workers(tmp_path, url)
    reference = f"sqlite+aiosqlite:///{tmp_path / 'reference.db'}"
    try:
        await publish(fresh_broker.bootstrap, archive("RB5"))
        workers.start(fresh_broker.bootstrap, **env, LIANDONG_CLOCK_SCAN_INTERVAL_MS="3600000")
        await caught_up(live, workers, fresh_broker.bootstrap)
        c = schema.cases
        async with live.begin() as conn:
            await conn.execute(
                update(c).where(c.c.case_id == "RB5-C000").values(stage="closed", stage_rank=99)
            )

        process = start_rebuild("case_registry", env, tmp_path)
        published: list[Envelope] = []
        while process.poll() is None:
            more = [case_event("filed", f"RB5-LIVE-{len(published):04d}", time_=at(50))]
            await publish(fresh_broker.bootstrap, more)
            published += more
        err = (tmp_path / "rebuild-case_registry.err").read_text()
        assert await finished(process, 1) == 0, err[-3000:]
        # Only the damaged row differed: the shadow stopped where the live worker was.
        assert swapped_counts((tmp_path / "rebuild-case_registry.out").read_text()) == {"cases": (1, 0)}
        assert "ETA" in err
        assert not (tmp_path / "store.db.shadow-case_registry").exists()

        await caught_up(live, workers, fresh_broker.bootstrap)
        await rebuild(settings_for(reference, tmp_path, fresh_broker.bootstrap, now_file))
        ref = make_engine(reference)
        try:
            want = await snapshot(ref, [c], {})
        finally:
            await ref.dispose()
        got = await snapshot(live, [c], {})
        assert got == want
        assert {e.subject for e in published} <= {r[0] for r in got["cases"]}
    finally:
        workers.stop_all()
        await live.dispose()


def test_the_progress_bar_redraws_in_place_on_a_terminal_and_prints_lines_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        bar = ProgressBar(stream, "重建 rebuild cases", interval_s=0)
        bar.phase("replay")
        bar.update(0, 1000)
        bar.update(250, 1000)
        bar.update(1000, 1000)
        bar.close()
    assert terminal.getvalue().count("\r") >= 3
    assert terminal.getvalue().endswith("\n")
    assert "\r" not in log.getvalue()
    lines = log.getvalue().splitlines()
    assert any(re.search(r"\[#{8}-{22}\]  25% 250/1,000 events .* ETA \d+:\d\d$", line) for line in lines), (
        lines
    )
    assert re.search(r"\[#{30}\] 100% 1,000/1,000 events .* ETA 0:00$", lines[-1]), lines


async def test_a_swap_keeps_the_live_case_flow_anomalies_that_only_the_worker_sweep_writes(
    pg_url: str,
) -> None:
    """The replay never holds the sweep's rows (category flow): deleting them would lose open
    spikes and silences, while a projector-owned anomaly the shadow lacks is still deleted."""
    from projections import shadow as shadow_tables

    live = make_engine(pg_url)
    ref = shadow_tables.schema_name("flowtest")
    shadow_engine = make_engine(pg_url, connect_args={"server_settings": {"search_path": ref}})
    at = datetime(2022, 11, 14, tzinfo=UTC)

    def row(anomaly_id: str, kind: str, category: str, area: str, subject: str) -> dict[str, Any]:
        return {
            "anomaly_id": anomaly_id,
            "subject": subject,
            "area": area,
            "kind": kind,
            "category": category,
            "event_id": "",
            "event_type": "case_flow.weekly",
            "occurred_at": at,
            "detected_at": at,
            "resolved_at": None,
            "detail": "x",
            "township": "shilou",
        }

    spike = row("f" * 32, "case_flow_spike", "flow", "township", "shilou")
    stale = row("e" * 32, "out_of_order", "data_quality", "case", "SHILOU-2022-00001")
    try:
        await upgrade(live)
        async with live.begin() as conn:
            await conn.execute(shadow_tables.drop_schema_sql(ref))
            await conn.exec_driver_sql(f'CREATE SCHEMA "{ref}"')
            await conn.execute(insert(schema.anomalies), [spike, stale])
        async with shadow_engine.begin() as conn:
            await conn.run_sync(shadow_tables.create_tables)
        async with live.begin() as conn:
            swapped = await shadow_tables.swap(conn, [schema.anomalies], ref)
        async with live.connect() as conn:
            left = (await conn.execute(select(schema.anomalies.c.anomaly_id))).scalars().all()
        assert left == [spike["anomaly_id"]]
        assert [(s.table, s.deleted) for s in swapped] == [("anomalies", 1)]
        assert "sweep" in shadow_tables.describe(schema.anomalies)
    finally:
        await shadow_engine.dispose()
        async with live.begin() as conn:
            await conn.execute(shadow_tables.drop_schema_sql(ref))
        await live.dispose()
