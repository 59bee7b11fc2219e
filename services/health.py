"""Liveness and readiness, shared by the API, the worker and the outbox relay.

`/healthz` answers while the process's event loop does: it checks nothing else, so an orchestrator
restarts a process only when it is stuck, never because a dependency is down (restarting would not
bring the dependency back).

`/readyz` runs the process's probes concurrently, each bounded by `PROBE_TIMEOUT_S`, so it answers
within about that long even when a dependency hangs. Answers are reused for `CACHE_S`, and
concurrent callers share one run, so probes cost the same however often they are asked. Each run
also sets `liandong_dependency_up{dependency}`.

A probe is `required` when readiness depends on it (the broker, the store, no rebuild in progress);
the schema registry is reported but not required: the codec caches every schema id at start-up, so a
registry outage does not stop a running process. docs/operations.md lists each process's probes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from aiokafka.client import AIOKafkaClient
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.metrics import HealthMetrics
from services.rebuilding import rebuilds_in_progress

PROBE_TIMEOUT_S = 2.0
CACHE_S = 1.0

ProbeFn = Callable[[], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Probe:
    """`run` returns a short detail on success and raises on failure."""

    name: str
    run: ProbeFn
    required: bool = True
    dependency: bool = True  # sets liandong_dependency_up{dependency=name}


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    checks: dict[str, dict[str, Any]]

    def body(self) -> dict[str, Any]:
        return {"status": "ready" if self.ready else "not_ready", "checks": self.checks}


class Health:
    def __init__(self, probes: Sequence[Probe], metrics: HealthMetrics | None = None) -> None:
        self._probes = list(probes)
        self._metrics = metrics
        self._last: Readiness | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    @property
    def dependencies(self) -> list[str]:
        return [p.name for p in self._probes if p.dependency]

    async def readiness(self, max_age_s: float = CACHE_S) -> Readiness:
        async with self._lock:
            if self._last is None or time.monotonic() - self._at > max_age_s:
                self._last = await self._run()
                self._at = time.monotonic()
            return self._last

    async def _run(self) -> Readiness:
        results = await asyncio.gather(*(_bounded(p) for p in self._probes))
        checks: dict[str, dict[str, Any]] = {}
        ready = True
        for probe, (ok, detail) in zip(self._probes, results, strict=True):
            checks[probe.name] = {
                "status": "ok" if ok else "fail",
                "detail": detail,
                "required": probe.required,
            }
            ready = ready and (ok or not probe.required)
            if self._metrics is not None and probe.dependency:
                self._metrics.dependency_up.labels(dependency=probe.name).set(1 if ok else 0)
        return Readiness(ready, checks)


async def _bounded(probe: Probe) -> tuple[bool, str]:
    try:
        return True, await asyncio.wait_for(probe.run(), PROBE_TIMEOUT_S)
    except TimeoutError:
        return False, f"no answer within {PROBE_TIMEOUT_S:g} s"
    except Exception as exc:  # any failure means "not ready"; its kind is reported, not hidden
        return False, f"{type(exc).__name__}: {str(exc)[:200]}"


# ---------------------------------------------------------------------------------------------------
# Probes


def kafka_probe(bootstrap: str) -> Probe:
    """A fresh client per probe: one connection and one metadata request, nothing cached that could
    go stale while the broker restarts."""

    async def run() -> str:
        client = AIOKafkaClient(
            bootstrap_servers=bootstrap, client_id="liandong-health", request_timeout_ms=2000
        )
        try:
            await client.bootstrap()
            return f"{len(client.cluster.brokers())} broker(s)"
        finally:
            await client.close()

    return Probe("kafka", run)


def database_name(engine: AsyncEngine) -> str:
    """`postgresql` or `sqlite`: the dependency label is the engine, as the alert rules expect."""
    return engine.dialect.name


def database_probe(engine: AsyncEngine) -> Probe:
    async def run() -> str:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return "SELECT 1"

    return Probe(database_name(engine), run)


def rebuilding_probe(engine: AsyncEngine, metrics: HealthMetrics | None = None) -> Probe:
    async def run() -> str:
        names = await rebuilds_in_progress(engine)
        if metrics is not None:
            metrics.rebuilding.set(len(names))
        if names:
            raise RebuildInProgress(", ".join(names))
        return "none"

    return Probe("rebuilding", run, dependency=False)


class RebuildInProgress(RuntimeError):
    pass


def group_probe(group_id: str, assigned: Callable[[], int | None]) -> Probe:
    """The worker's: ready once its consumer has joined the group and been handed its partitions
    (`assigned()` is how many, 0 for a worker beyond the partition count, None before the first
    assignment). Until then events sent to the hub are accepted but not yet projected, which a
    rolling update and `liandong up` should wait out. It stays ready through later rebalances: they
    are brief and the group, not readiness, manages them."""

    async def run() -> str:
        count = assigned()
        if count is None:
            raise NotJoinedYet(f"waiting for the first partition assignment of group {group_id}")
        return f"{count} partition(s) assigned"

    return Probe("consumer_group", run, dependency=False)


class NotJoinedYet(RuntimeError):
    pass


def schema_registry_probe(url: str) -> Probe:
    async def run() -> str:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
            response = await client.get(url.rstrip("/") + "/subjects")
        response.raise_for_status()
        return f"HTTP {response.status_code}"

    return Probe("schema_registry", run, required=False)


def store_probes(
    engine: AsyncEngine, bootstrap: str, registry_url: str | None, metrics: HealthMetrics | None
) -> list[Probe]:
    """The API's and the worker's probes: broker, store, rebuild marker, schema registry if set."""
    probes = [kafka_probe(bootstrap), database_probe(engine), rebuilding_probe(engine, metrics)]
    if registry_url:
        probes.append(schema_registry_probe(registry_url))
    return probes


def dependency_names(database_url: str, registry_url: str | None) -> list[str]:
    names = ["kafka", make_url(database_url).get_backend_name()]
    return [*names, "schema_registry"] if registry_url else names


PROBLEM_TITLE = ("Not ready", "服务未就绪")


def problem_body(readiness: Readiness) -> Mapping[str, Any]:
    """The 503 body: RFC 9457 problem details with the same `checks` as a 200."""
    failed = sorted(name for name, c in readiness.checks.items() if c["status"] != "ok" and c["required"])
    return {
        "type": "urn:liandong:problem:not-ready",
        "title": PROBLEM_TITLE[0],
        "title_zh": PROBLEM_TITLE[1],
        "status": 503,
        "detail": "failed: " + ", ".join(failed),
        "checks": readiness.checks,
    }
