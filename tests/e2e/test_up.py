"""`liandong up` as a user runs it: real processes, the embedded broker, SQLite, HTTP."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.embedded_broker import free_port
from tests.support import SUPERVISOR, case_event, cloudevent_json, liandong, wait_for

UNIT = "shilou.enforcement-office"


class Hub:
    def __init__(self, tmp_path: Path) -> None:
        self.env = {
            "LIANDONG_DATA_DIR": str(tmp_path / "data"),
            "LIANDONG_API_PORT": str(free_port()),
            "LIANDONG_WORKER_WEB_PORT": str(free_port()),
            "LIANDONG_KAFKA_BOOTSTRAP": "",
            "LIANDONG_DATABASE_URL": "",
        }
        self.api = f"http://127.0.0.1:{self.env['LIANDONG_API_PORT']}"
        self.worker_metrics = f"http://127.0.0.1:{self.env['LIANDONG_WORKER_WEB_PORT']}/metrics"
        self.tmp_path = tmp_path
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def output(self) -> str:
        return (self.tmp_path / f"up-{self.runs}.log").read_text(errors="replace")

    def issue_key(self, unit: str = UNIT) -> str:
        done = subprocess.run(
            [*_cli(), "keys", "issue", unit], env={**os.environ, **self.env}, capture_output=True, check=True
        )
        return done.stdout.decode().strip()

    async def up(self, *args: str) -> None:
        self.runs += 1
        log = (self.tmp_path / f"up-{self.runs}.log").open("wb")
        self.process = liandong("up", *args, env=self.env, stdout=log, stderr=subprocess.STDOUT)

        async def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"liandong up exited early:\n{self.output[-3000:]}")
            # The last line of start-up: with --demo, the sign-in link and the simulator come after
            # "API ready".
            return "press Ctrl-C to stop" in self.output

        await wait_for(ready, 90, "`liandong up` to finish starting (its 'press Ctrl-C to stop' line)")

    def pids(self) -> list[int]:
        return sorted({int(p) for p in re.findall(r"pid (\d+)", self.output)})

    def stop(self, signum: int) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(60)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _cli() -> list[str]:
    return [sys.executable, "-m", "services.cli"]


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    instance = Hub(tmp_path)
    yield instance
    instance.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie waiting to be reaped by its (already gone) parent counts as stopped.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


async def _post(client: httpx.AsyncClient, hub: Hub, key: str, *events: object) -> httpx.Response:
    body = [cloudevent_json(e) for e in events]  # type: ignore[arg-type]
    return await client.post(
        f"{hub.api}/v1/events",
        json=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/cloudevents-batch+json"},
    )


def _sample(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_liandong_up_runs_the_hub_and_keeps_projections_across_restarts(hub: Hub) -> None:
    key = hub.issue_key()
    assert key.startswith("ld_")
    await hub.up()
    assert "MEMORY ONLY" in hub.output
    assert "仅内存存储" in hub.output
    assert re.search(r"embedded broker \(Tansu\) at 127\.0\.0\.1:\d+", hub.output)
    assert len(hub.pids()) == 3, hub.output
    # The prompt comes only once the worker has joined its group: asked now, without waiting, it is ready.
    async with httpx.AsyncClient(timeout=10) as client:
        worker_ready = await client.get(hub.worker_metrics.replace("/metrics", "/readyz"))
    assert worker_ready.status_code == 200, worker_ready.text
    assert worker_ready.json()["checks"]["consumer_group"]["status"] == "ok"

    async with httpx.AsyncClient(timeout=15, headers={"Authorization": f"Bearer {key}"}) as client:
        filed, decided = case_event("filed", "E2E-1"), case_event("decided", "E2E-1")
        response = await _post(client, hub, key, filed, decided, case_event("filed", "E2E-2"))
        assert response.status_code == 202, response.text

        async def decided_case() -> dict[str, object] | None:
            r = await client.get(f"{hub.api}/v1/cases/E2E-1")
            return r.json() if r.status_code == 200 and r.json()["stage"] == "decided" else None

        case = await wait_for(decided_case, 60, "case E2E-1 to reach stage decided in the API")
        assert [e["id"] for e in case["events"]] == [filed.id, decided.id]  # type: ignore[index]

        # The same event id sent again (a client retry) is stored once.
        marker = case_event("filed", "E2E-3")
        assert (await _post(client, hub, key, filed, marker)).status_code == 202

        async def marker_seen() -> dict[str, object] | None:
            r = await client.get(f"{hub.api}/v1/cases/E2E-3")
            return r.json() if r.status_code == 200 else None

        # Both were in one batch, so once E2E-3 is visible the duplicate has been handled too.
        await wait_for(marker_seen, 60, "case E2E-3 in the API")
        again = (await client.get(f"{hub.api}/v1/cases/E2E-1")).json()
        assert again["event_count"] == 2
        assert len(again["events"]) == 2
        listed = (await client.get(f"{hub.api}/v1/cases", params={"township": "shilou"})).json()
        assert {c["case_id"] for c in listed["items"]} >= {"E2E-1"}

        api_metrics = (await client.get(f"{hub.api}/metrics")).text
        assert _sample(api_metrics, "liandong_events_accepted_total") == 5

        async def worker_counted() -> float:
            text = (await client.get(hub.worker_metrics)).text
            return _sample(text, "liandong_events_projected_total", projection="hub")

        assert await wait_for(worker_counted, 30, "worker metrics to count projected events") >= 2

    pids = hub.pids()
    assert hub.stop(signal.SIGTERM) == 0
    assert [pid for pid in pids if _alive(pid)] == [], "SIGTERM must stop every child"

    # Second run on the same data folder: a new, empty broker; the projections remain.
    await hub.up()
    async with httpx.AsyncClient(timeout=15, headers={"Authorization": f"Bearer {key}"}) as client:
        kept = await client.get(f"{hub.api}/v1/cases/E2E-1")
        assert kept.status_code == 200
        assert kept.json()["stage"] == "decided"
        # This event sits at offset 0 of the new broker, below the old checkpoints.
        closed = case_event("closed", "E2E-1")
        assert (await _post(client, hub, key, closed)).status_code == 202

        async def closed_case() -> bool:
            r = await client.get(f"{hub.api}/v1/cases/E2E-1")
            return r.status_code == 200 and r.json()["stage"] == "closed"

        await wait_for(closed_case, 60, "the new broker's event to close case E2E-1")
    pids = hub.pids()
    assert hub.stop(signal.SIGINT) == 0
    assert [pid for pid in pids if _alive(pid)] == [], "Ctrl-C must stop every child"


async def test_liandong_up_demo_plays_a_simulated_year_whose_clock_the_hub_follows(hub: Hub) -> None:
    key = hub.issue_key(SUPERVISOR)  # the district's figures are the supervisors' to read
    await hub.up("--demo", "--demo-minutes", "2")
    assert "demo: simulating 2022" in hub.output
    assert len(hub.pids()) == 4, hub.output  # broker, worker, API and the simulator
    clock = hub.tmp_path / "data" / "demo-clock.txt"

    async with httpx.AsyncClient(timeout=15, headers={"Authorization": f"Bearer {key}"}) as client:

        async def a_month_projected() -> dict[str, object] | None:
            if not clock.exists() or clock.read_text() < "2022-02":
                return None
            r = await client.get(f"{hub.api}/v1/stats/calibration", params={"year": 2022})
            body: dict[str, object] = r.json()
            filed = body.get("cases_filed")
            return body if isinstance(filed, int) and filed > 500 else None

        figures = await wait_for(a_month_projected, 120, "a simulated month of cases in the hub")
        assert figures["officers"] == 164
        # The worker reads "now" from the simulator's clock: the clocks it keeps are of 2022.
        listed = (await client.get(f"{hub.api}/v1/clocks", params={"limit": 5})).json()["items"]
        assert listed
        assert all(c["started_at"].startswith("2022-") for c in listed)

    pids = hub.pids()
    assert hub.stop(signal.SIGINT) == 0
    assert [pid for pid in pids if _alive(pid)] == [], "Ctrl-C must stop the simulator and the hub"
