"""The pure parts of health and metrics: the rebuild marker (on SQLite), readiness from probes, the
ingest counter, and the relay's port settings."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.db import make_engine
from projections.migrate import upgrade
from projections.schema import hub_meta
from services.health import Health, Probe, group_probe, problem_body
from services.metrics import HealthMetrics, WorkerMetrics
from services.rebuilding import mark_rebuilding, rebuilds_in_progress
from services.settings import Settings, SettingsError
from services.worker.ops import IngestCounter


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await upgrade(engine)
    yield engine
    await engine.dispose()


async def test_a_marker_counts_while_held_and_is_gone_after(engine: AsyncEngine) -> None:
    assert await rebuilds_in_progress(engine) == []
    async with mark_rebuilding(engine, "cases"):
        assert await rebuilds_in_progress(engine) == ["cases"]
        async with mark_rebuilding(engine, "all"):
            assert await rebuilds_in_progress(engine) == ["all", "cases"]
        assert await rebuilds_in_progress(engine) == ["cases"]
    assert await rebuilds_in_progress(engine) == []


async def test_a_marker_is_released_when_the_block_fails(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with mark_rebuilding(engine, "cases"):
            raise RuntimeError("boom")
    assert await rebuilds_in_progress(engine) == []


async def test_the_heartbeat_keeps_a_long_rebuild_live(engine: AsyncEngine) -> None:
    async with mark_rebuilding(engine, "cases", heartbeat_seconds=0.05):
        first = await _value(engine, "rebuilding.cases")

        async def refreshed() -> bool:
            return (await _value(engine, "rebuilding.cases"))["heartbeat_at"] != first["heartbeat_at"]

        deadline = time.monotonic() + 5
        while not await refreshed():
            assert time.monotonic() < deadline, "the heartbeat never refreshed the marker"
            await asyncio.sleep(0.02)  # why: polling the row the heartbeat task rewrites
        # Well past three of the first beat's intervals, and still live: the beats go on.
        await asyncio.sleep(0.3)  # why: the time the marker would need to go stale without beats
        assert await rebuilds_in_progress(engine) == ["cases"]


async def test_a_crashed_rebuild_goes_stale_after_three_missed_beats(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    rows = {
        "rebuilding.crashed": {
            "heartbeat_at": (now - timedelta(seconds=16)).isoformat(),
            "heartbeat_seconds": 5,
        },
        "rebuilding.slow": {
            "heartbeat_at": (now - timedelta(seconds=10)).isoformat(),
            "heartbeat_seconds": 5,
        },
        "rebuilding.garbled": "not json",
        "rebuilding.no-beat": {"pid": 1},
    }
    async with engine.begin() as conn:
        for key, value in rows.items():
            await conn.execute(
                insert(hub_meta).values(key=key, value=value if isinstance(value, str) else json.dumps(value))
            )
    assert await rebuilds_in_progress(engine) == ["slow"]


async def test_a_holder_does_not_delete_another_holders_marker(engine: AsyncEngine) -> None:
    # Another process took the same name over (its own token) while this one ran.
    async with mark_rebuilding(engine, "cases"), engine.begin() as conn:
        other = {"token": "other", "heartbeat_at": datetime.now(UTC).isoformat(), "heartbeat_seconds": 5}
        await conn.execute(
            hub_meta.update().where(hub_meta.c.key == "rebuilding.cases").values(value=json.dumps(other))
        )
    assert await rebuilds_in_progress(engine) == ["cases"]


@pytest.mark.parametrize("name", ["", "x" * 54, "bad\nname"])
def test_marker_names_are_checked(engine: AsyncEngine, name: str) -> None:
    with pytest.raises(ValueError, match="rebuild marker name"):
        mark_rebuilding(engine, name)


async def _value(engine: AsyncEngine, key: str) -> dict[str, object]:
    async with engine.connect() as conn:
        value = await conn.scalar(select(hub_meta.c.value).where(hub_meta.c.key == key))
    parsed: dict[str, object] = json.loads(str(value))
    return parsed


# ---------------------------------------------------------------------------------------------------
# Readiness


def _probe(name: str, outcome: str | BaseException, delay_s: float = 0.0, required: bool = True) -> Probe:
    async def run() -> str:
        await asyncio.sleep(delay_s)  # why: a dependency that answers late (or never)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return Probe(name, run, required=required)


async def test_readiness_needs_every_required_probe_and_sets_the_gauges() -> None:
    registry = CollectorRegistry()
    metrics = HealthMetrics.create(registry, ["kafka", "postgresql", "schema_registry"])
    health = Health(
        [
            _probe("kafka", "1 broker(s)"),
            _probe("postgresql", ConnectionRefusedError("refused")),
            _probe("schema_registry", OSError("down"), required=False),
        ],
        metrics,
    )
    answer = await health.readiness()
    assert not answer.ready
    assert answer.checks["kafka"] == {"status": "ok", "detail": "1 broker(s)", "required": True}
    assert answer.checks["postgresql"]["status"] == "fail"
    assert "ConnectionRefusedError" in answer.checks["postgresql"]["detail"]
    assert registry.get_sample_value("liandong_dependency_up", {"dependency": "kafka"}) == 1
    assert registry.get_sample_value("liandong_dependency_up", {"dependency": "postgresql"}) == 0
    assert registry.get_sample_value("liandong_dependency_up", {"dependency": "schema_registry"}) == 0
    body = problem_body(answer)
    assert body["status"] == 503
    assert body["detail"] == "failed: postgresql"  # the optional registry does not count
    assert body["checks"] == answer.checks


async def test_the_worker_is_ready_once_its_group_has_assigned_partitions_even_none() -> None:
    assigned: list[int | None] = [None]
    health = Health([_probe("kafka", "ok"), group_probe("liandong.abc", lambda: assigned[0])])
    before = await health.readiness(max_age_s=0)
    assert not before.ready
    assert before.checks["consumer_group"]["status"] == "fail"
    assert "first partition assignment of group liandong.abc" in before.checks["consumer_group"]["detail"]
    assert problem_body(before)["detail"] == "failed: consumer_group"
    for count in (3, 0):  # a worker beyond the partition count holds none, and is ready all the same
        assigned[0] = count
        after = await health.readiness(max_age_s=0)
        assert after.ready
        assert after.checks["consumer_group"]["detail"] == f"{count} partition(s) assigned"


async def test_an_optional_probe_failing_leaves_the_process_ready() -> None:
    health = Health([_probe("kafka", "ok"), _probe("schema_registry", OSError("down"), required=False)])
    answer = await health.readiness()
    assert answer.ready
    assert answer.body()["status"] == "ready"


async def test_a_hanging_probe_is_cut_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.health.PROBE_TIMEOUT_S", 0.2)
    health = Health([_probe("kafka", "ok", delay_s=30), _probe("postgresql", "ok")])
    started = time.monotonic()
    answer = await health.readiness()
    assert time.monotonic() - started < 2
    assert not answer.ready
    assert answer.checks["kafka"]["detail"] == "no answer within 0.2 s"
    assert answer.checks["postgresql"]["status"] == "ok"


async def test_answers_are_reused_for_a_second_and_shared_by_concurrent_callers() -> None:
    runs = 0

    async def run() -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)  # why: concurrent callers arrive while this run is in flight
        return "ok"

    health = Health([Probe("kafka", run)])
    await asyncio.gather(*(health.readiness() for _ in range(5)))
    assert runs == 1
    await health.readiness(max_age_s=0)
    assert runs == 2


# ---------------------------------------------------------------------------------------------------
# The ingest counter


def test_each_record_is_counted_once_by_source_and_type_with_unknowns_bounded() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry)
    counter = IngestCounter(metrics, {"shilou.enforcement-office"}, {"cn.gov.liandong.case.filed.v1"})
    known = [("ce_source", b"shilou.enforcement-office"), ("ce_type", b"cn.gov.liandong.case.filed.v1")]
    forged = [("ce_source", b"someone.else"), ("ce_type", b"cn.gov.liandong.case.filed.v1")]
    batch = [("t", 0, 0, known), ("t", 0, 1, known), ("t", 1, 0, forged), ("t", 1, 1, [])]
    counter.count(batch)
    counter.count(batch)  # a retried batch: nothing counted twice
    counter.count([("t", 0, 2, known)])

    def value(source: str, kind: str) -> float | None:
        return registry.get_sample_value("liandong_events_ingested_total", {"source": source, "type": kind})

    assert value("shilou.enforcement-office", "cn.gov.liandong.case.filed.v1") == 3
    assert value("unknown", "cn.gov.liandong.case.filed.v1") == 1
    assert value("unknown", "unknown") == 1
    assert value("someone.else", "cn.gov.liandong.case.filed.v1") is None


def test_both_delivery_channels_and_every_clock_state_start_at_zero() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry)
    metrics.init_clocks(["transfer.acceptance"])
    for channel in ("webhook", "email"):
        assert registry.get_sample_value("liandong_deliveries_failed_total", {"channel": channel}) == 0
    for state in ("open", "due", "overdue"):
        assert (
            registry.get_sample_value("liandong_clocks", {"rule": "transfer.acceptance", "state": state}) == 0
        )


# ---------------------------------------------------------------------------------------------------
# Settings


def test_the_relay_port_and_its_earlier_name() -> None:
    assert Settings.from_env({}).relay_web_port == 6067
    assert Settings.from_env({"LIANDONG_CONNECTOR_METRICS_PORT": "7001"}).relay_web_port == 7001
    both = {"LIANDONG_CONNECTOR_METRICS_PORT": "7001", "LIANDONG_RELAY_WEB_PORT": "7002"}
    assert Settings.from_env(both).relay_web_port == 7002
    assert Settings.from_env({"LIANDONG_RELAY_WEB_HOST": "0.0.0.0"}).relay_web_host == "0.0.0.0"
    assert Settings.from_env({"LIANDONG_METRICS_INTERVAL_MS": "500"}).metrics_interval_s == 0.5
    for bad in ({"LIANDONG_RELAY_WEB_PORT": "0"}, {"LIANDONG_METRICS_INTERVAL_MS": "5"}):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)
