"""The hub's long-running processes (api, worker, outbox relay) started for real, for the tests that
scrape their /metrics and ask their /readyz. None outlives its fixture."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.embedded_broker import free_port
from tests.support import liandong, wait_for

OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS liandong_outbox (
    id bigserial PRIMARY KEY,
    unit text NOT NULL,
    event_type text NOT NULL,
    subject text NOT NULL,
    occurred_at timestamptz NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz DEFAULT now()
)"""

# (name, labels as sorted tuple) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Scrape:
    families: dict[str, str]  # family name -> type
    samples: Samples

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def matching(self, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Every sample of `name` whose labels include `labels`."""
        return {
            key: value
            for (n, key), value in self.samples.items()
            if n == name and all(dict(key).get(k) == v for k, v in labels.items())
        }


def parse(text: str) -> Scrape:
    families: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return Scrape(families, samples)


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/metrics", timeout=10)
    response.raise_for_status()
    return parse(response.text)


@dataclass
class Hub:
    """Processes of one hub, sharing an environment."""

    tmp_path: Path
    env: dict[str, str]
    started: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")[-4000:]

    def assert_running(self) -> None:
        for name, process in self.started.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{self.log(name)}")

    def start(self, name: str, args: tuple[str, ...], port_var: str, **extra: str) -> str:
        port = free_port()
        log = (self.tmp_path / f"{name}.log").open("wb")
        env = {**self.env, port_var: str(port), **extra}
        self.started[name] = liandong(*args, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.urls[name] = f"http://127.0.0.1:{port}"
        return self.urls[name]

    async def answering(self, name: str, timeout_s: float = 60) -> None:
        url = self.urls[name]

        async def up() -> bool:
            self.assert_running()
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{url}/healthz", timeout=2)).status_code == 200

        await wait_for(up, timeout_s, f"{name} to answer /healthz")

    def stop_all(self) -> None:
        for process in self.started.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def readyz(url: str) -> tuple[int, dict[str, object], str]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/readyz", timeout=10)
    return response.status_code, response.json(), response.headers.get("content-type", "")
