"""A simulated 2022 played into a real hub reproduces the article's figures from the hub's projections.

Real processes: a broker of the test's own (Tansu), a fresh PostgreSQL database, the hub's worker
and API (`liandong worker`, `liandong api`), and `liandong simulate --speed max`, which publishes
through the gateway, the Kafka SDK and the spreadsheet import.

cases_per_officer: the article gives 79.95, which implies about 164 officers; the directory has
exactly 164, so the hub reports 13,097 / 164 = 79.86. The check allows 0.5% around 79.95.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from projections.db import make_engine
from projections.migrate import upgrade
from services.embedded_broker import EmbeddedBroker, free_port
from tests.processes import Workers
from tests.support import liandong, reader_headers, wait_for

pytestmark = pytest.mark.integration

FIGURES = {
    "year": 2022,
    "cases_filed": 13_097,
    "officers": 164,
    "reconsiderations": 18,
    "revoked_or_changed": 5,
}
ARTICLE_CASES_PER_OFFICER = 79.95


class Processes:
    """The API and the simulator as processes; none outlives the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"{name}.log").open("wb")
        process = liandong(*args, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    pool = Processes(tmp_path)
    yield pool
    pool.stop_all()


def _sample(text: str, name: str) -> float:
    return sum(
        s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name
    )


async def _anomaly_ids(client: httpx.AsyncClient, kind: str, *, resolved: bool = False) -> set[str]:
    params = {"kind": kind, "limit": 1000, "open": "false" if resolved else "true"}
    body = (await client.get("/v1/anomalies", params=params)).json()
    assert body["total"] == len(body["items"]), body["total"]
    return {item["anomaly_id"] for item in body["items"]}


async def _wait_for_anomalies(client: httpx.AsyncClient, injected: dict[str, int]) -> dict[str, set[str]]:
    """The open anomalies of each injected kind, once the hub reports as many as were injected.

    Waited for, not read once: the linkage topic may still be projecting, and a decision that
    arrives before its legal review (two units, two channels, published at once) is flagged until
    the review arrives.
    """

    async def found() -> dict[str, set[str]] | None:
        ids = {kind: await _anomaly_ids(client, kind) for kind in injected}
        return ids if {kind: len(v) for kind, v in ids.items()} == injected else None

    try:
        return await wait_for(found, 60, "the hub to find the injected anomalies", interval_s=1.0)
    except AssertionError:
        totals = {kind: len(await _anomaly_ids(client, kind)) for kind in injected}
        raise AssertionError(f"the hub found {totals}; the simulator injected {injected}") from None


async def _wait_for_risk_alerts(client: httpx.AsyncClient, found: dict[str, set[str]]) -> None:
    """Each anomaly is announced and becomes a risk alert (alert id = anomaly id) in the district
    supervision section's inbox, under the rule `anomaly.<kind>`. Any other open alert of those
    rules may only be a finding the hub has since resolved (a legal review that arrived late)."""

    async def raised() -> dict[str, set[str]] | None:
        body = (await client.get("/v1/inbox", params={"level": "risk", "limit": 1000})).json()
        by_rule: dict[str, set[str]] = {}
        for item in body["items"]:
            by_rule.setdefault(item["rule_id"], set()).add(item["alert_id"])
        complete = all(ids <= by_rule.get(f"anomaly.{kind}", set()) for kind, ids in found.items())
        return by_rule if complete else None

    try:
        by_rule = await wait_for(raised, 60, "the announcer's risk alerts in the inbox", interval_s=1.0)
    except AssertionError:
        body = (await client.get("/v1/inbox", params={"level": "risk", "limit": 1000})).json()
        rules = sorted(item["rule_id"] for item in body["items"])
        raise AssertionError(f"risk alerts in the inbox: {rules}; anomalies {found}") from None
    for kind, ids in found.items():
        others = by_rule[f"anomaly.{kind}"] - ids
        assert others <= await _anomaly_ids(client, kind, resolved=True), (kind, others)


async def test_a_simulated_2022_gives_the_articles_yearly_figures_through_every_channel(
    fresh_broker: EmbeddedBroker, workers: Workers, processes: Processes, pg_url: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    engine = make_engine(pg_url)
    await upgrade(engine)
    await engine.dispose()
    bootstrap = fresh_broker.bootstrap
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    env = {
        "LIANDONG_KAFKA_BOOTSTRAP": bootstrap,
        "LIANDONG_DATABASE_URL": pg_url,
        "LIANDONG_DATA_DIR": str(tmp_path / "data"),
        "LIANDONG_TOPIC_PARTITIONS": "3",
        "LIANDONG_API_PORT": str(api_port),
    }
    worker, worker_port = workers.start(bootstrap)
    server = processes.start("api", "api", env=env)
    async with httpx.AsyncClient(base_url=api, timeout=30, headers=await reader_headers(pg_url)) as client:

        async def ready() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"the API exited:\n{processes.log('api')}")
            return (await client.get("/readyz")).status_code == 200

        await wait_for(ready, 60, "the API to be ready")
        summary_path = tmp_path / "summary.json"
        simulator = processes.start(
            "simulate",
            "simulate",
            "--speed",
            "max",
            "--seed",
            "2022",
            "--api",
            api,
            "--summary",
            str(summary_path),
            "--work-dir",
            str(tmp_path / "exports"),
            env=env,
        )

        async def finished() -> bool:
            # True also when a process died: wait_for would retry a raised error until its timeout.
            return simulator.poll() is not None or worker.poll() is not None

        await wait_for(finished, 180, "the simulator to publish the year", interval_s=0.5)
        workers.assert_running()
        assert simulator.returncode == 0, processes.log("simulate")
        published = time.monotonic() - began
        summary: dict[str, Any] = json.loads(summary_path.read_text(encoding="utf-8"))
        assert set(summary["by_channel"]) == {"gateway", "sdk", "spreadsheet"}
        assert all(n > 0 for n in summary["by_channel"].values()), summary["by_channel"]
        assert 0.03 <= summary["stalled_share"] <= 0.08

        async def figures() -> dict[str, Any] | None:
            if worker.poll() is not None:
                return {"worker exited": worker.returncode}
            body: dict[str, Any] = (await client.get("/v1/stats/calibration", params={"year": 2022})).json()
            return body if all(body.get(k) == v for k, v in FIGURES.items()) else None

        try:
            body = await wait_for(figures, 150, "the hub to report the year's figures", interval_s=1.0)
        except AssertionError:
            last = (await client.get("/v1/stats/calibration", params={"year": 2022})).text
            raise AssertionError(f"the hub reported {last}; summary {summary}") from None
        workers.assert_running()
        assert body["cases_per_officer"] == pytest.approx(ARTICLE_CASES_PER_OFFICER, rel=0.005)

        # Each channel reached the hub: gateway requests counted by the API, the SDK's town offices
        # and the spreadsheet department in the case registry, and the imports in the connector runs.
        assert _sample((await client.get("/metrics")).text, "liandong_events_accepted_total") > 0
        town = await client.get("/v1/cases/SHILOU-2022-00001")
        assert town.status_code == 200
        assert town.json()["handling_unit"] == "shilou.enforcement-office"
        imported = await client.get("/v1/cases/HOUSING-CONSTRUCTION-2022-00001")
        assert imported.status_code == 200
        assert imported.json()["handling_unit"] == "district.housing-construction"
        runs = json.dumps((await client.get("/v1/connectors")).json(), ensure_ascii=False)
        assert "district.housing-construction" in runs

        # The lapses the simulator injected (its summary counts those it published) are what the
        # hub's checks find, and each is announced into the supervision section's inbox.
        injected: dict[str, int] = summary["injected_anomalies"]
        assert set(injected) == {"repeat_inspection", "legal_review_missing"}
        assert all(n > 0 for n in injected.values()), injected
        found = await _wait_for_anomalies(client, injected)
        await _wait_for_risk_alerts(client, found)
    print(
        f"\nsimulated 2022: {summary['events']} events, published in {published:.0f} s, "
        f"figures in {time.monotonic() - began:.0f} s; {summary['by_channel']}; injected anomalies "
        f"found and in the inbox: {injected}"
    )
    assert worker.poll() is None
    assert worker_port
