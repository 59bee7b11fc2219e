"""`liandong simulate`: play a simulated year into a running hub, or write it out as JSON lines.

The composition: keys for the gateway units (issued with the code of `liandong keys issue`, or read
from a keys file), the broker and the API from the settings, the clock file, and a record of every
spreadsheet import in the store, as `liandong import` keeps one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from connectors.framework import Health
from connectors.simulator.channels import open_channels
from connectors.simulator.model import YearModel
from connectors.simulator.runner import ClockFile, Pace, Summary, play
from connectors.simulator.simulated import SimulatedEvent
from connectors.simulator.timing import year_bounds
from events.catalog import Catalog
from events.directory import Directory
from projections.db import make_engine
from services.connectors_registry import record_run
from services.keys import issue_key
from services.registry import make_registry
from services.settings import Settings, SettingsError
from services.store import migrate

MAX_PACE = Pace.of()


@dataclass(frozen=True, slots=True)
class SimulateOptions:
    seed: int = 2022
    year: int = 2022
    pace: Pace = MAX_PACE
    clock_file: Path | None = None
    api_url: str | None = None
    keys_file: Path | None = None
    work_dir: Path | None = None
    summary_file: Path | None = None
    output: Path | None = None
    hub_metrics: str | None = None


def gateway_units(model: YearModel) -> list[str]:
    """Every unit the profile sends through the gateway (a key each)."""
    profile = model.world.profile
    return sorted(u for u in model.world.directory.units if profile.uses_gateway(u))


def load_keys(keys_file: Path | None) -> dict[str, str]:
    if keys_file is None or not keys_file.exists():
        return {}
    return {str(k): str(v) for k, v in json.loads(keys_file.read_text(encoding="utf-8")).items()}


def save_keys(keys_file: Path, keys: Mapping[str, str]) -> None:
    keys_file.parent.mkdir(parents=True, exist_ok=True)
    keys_file.write_text(json.dumps(keys, indent=1, sort_keys=True), encoding="utf-8")
    os.chmod(keys_file, 0o600)  # the keys are secrets


async def issue_keys(settings: Settings, units: Iterable[str]) -> dict[str, str]:
    """New keys for `units`, issued into the hub's store as `liandong keys issue` does."""
    await migrate(settings)
    engine = make_engine(settings.database_url)
    try:
        directory = Directory.load()
        return {unit: await issue_key(engine, directory, unit) for unit in units}
    finally:
        await engine.dispose()


def write_stream(events: Iterable[SimulatedEvent], path: Path) -> int:
    """The stream as JSON lines (`-` for standard output): byte-identical for one seed."""
    out = sys.stdout if str(path) == "-" else path.open("w", encoding="utf-8")
    n = 0
    try:
        for event in events:
            line = {
                "publish_at": event.publish_at.isoformat(),
                "channel": event.channel,
                **event.cloudevent(),
            }
            out.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    finally:
        if out is not sys.stdout:
            out.close()
    return n


async def simulate(
    settings: Settings, options: SimulateOptions, model: YearModel, keys: Mapping[str, str]
) -> Summary:
    """Play `model`'s year into the hub; `keys` hold a gateway key for every gateway unit."""
    if settings.kafka_bootstrap is None:
        raise SettingsError(
            "LIANDONG_KAFKA_BOOTSTRAP is required for `liandong simulate` (or use `liandong up --demo`)"
        )
    engine = make_engine(settings.database_url)

    async def imported(health: Health, unit: str, name: str) -> None:
        await record_run(engine, health, unit, name)

    api_url = options.api_url or f"http://{settings.api_host}:{settings.api_port}"
    channels = open_channels(
        api_url=api_url,
        keys=keys,
        bootstrap=settings.kafka_bootstrap,
        work_dir=options.work_dir or settings.data_dir / "simulator",
        catalog=Catalog.load(),
        directory=model.world.directory,
        registry=make_registry(settings),
        partitions=settings.topic_partitions,
        on_import=imported,
    )
    start, end = year_bounds(options.year)
    clock = ClockFile(options.clock_file) if options.clock_file else None
    try:
        settle = await HubSettle.start(options.hub_metrics) if options.hub_metrics else None
        summary = await play(
            model.events(),
            channels,
            options.pace,
            start=start,
            end=end,
            clock=clock,
            progress=_Progress(),
            settle=settle,
        )
    finally:
        for channel in channels.values():
            await channel.close()
        await engine.dispose()
    return summary


class HubSettle:
    """Waits, before the simulated clock moves on, until the worker has projected what was published.

    It reads the worker's `liandong_events_projected_total` (hub projection, without the hub's own
    alert and directory events). A worker that stops counting for two seconds has nothing left to
    project (a re-run of the same seed is deduplicated, so it never reaches the target), and a
    minute is the most it waits.
    """

    def __init__(self, url: str, client: httpx.AsyncClient, base: float) -> None:
        self._url, self._client, self._base = url, client, base

    @classmethod
    async def start(cls, url: str) -> HubSettle:
        client = httpx.AsyncClient(timeout=5)
        settle = cls(url, client, 0.0)
        settle._base = await settle._projected()
        return settle

    async def _projected(self) -> float:
        try:
            text = (await self._client.get(self._url)).text
        except httpx.HTTPError:
            return -1.0
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name != "liandong_events_projected_total"
                    or sample.labels.get("projection") != "hub"
                ):
                    continue
                if not sample.labels.get("type", "").startswith(_HUB_OWN):
                    total += sample.value
        return total

    async def __call__(self, published: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        last, still_since = -1.0, loop.time()
        while loop.time() < deadline:
            projected = await self._projected()
            if projected >= self._base + published:
                return
            if projected != last:
                last, still_since = projected, loop.time()
            elif loop.time() - still_since > 2:
                return
            await asyncio.sleep(0.2)  # polling the worker's metrics


_HUB_OWN = ("cn.gov.liandong.alert.", "cn.gov.liandong.anomaly.", "cn.gov.liandong.directory.")


class _Progress:
    """A line per wall-clock interval, so that a long run shows it is alive without flooding."""

    def __init__(self, every_s: float = 5.0) -> None:
        self._every = every_s
        self._last = 0.0

    def __call__(self, moment: datetime, summary: Summary) -> None:
        import time

        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.by_channel.items()))
        print(
            f"[simulate] 模拟时间 simulated time {moment:%Y-%m-%d %H:%M}: {summary.events} events ({counts})",
            file=sys.stderr,
            flush=True,
        )


def run_simulate(settings: Settings, options: SimulateOptions) -> int:
    if options.output is not None:
        n = write_stream(YearModel(options.seed, options.year).events(), options.output)
        print(f"[simulate] wrote {n} events of {options.year} (seed {options.seed})", file=sys.stderr)
        return 0
    # One line per gateway request is noise at this volume; failures still raise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    model = YearModel(options.seed, options.year)
    keys = load_keys(options.keys_file)
    missing = [u for u in gateway_units(model) if u not in keys]
    if missing:
        keys.update(asyncio.run(issue_keys(settings, missing)))
        if options.keys_file is not None:
            save_keys(options.keys_file, keys)
    summary = asyncio.run(simulate(settings, options, model, keys))
    share = model.ledger.share
    if options.summary_file is not None:
        doc = {
            "seed": options.seed,
            "year": options.year,
            **summary.as_json(),
            "stalled_share": round(share, 4),
        }
        options.summary_file.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    counts: Mapping[str, int] = summary.by_channel
    print(
        f"[simulate] 模拟完成 simulated {options.year} (seed {options.seed}): {summary.events} events in "
        f"{summary.wall_s:.0f} s; "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + f"; stalled loops {share:.1%}",
        file=sys.stderr,
        flush=True,
    )
    return 0
