"""Publishing the simulated year through the hub's real front doors, as each unit would.

- `GatewayChannel`: `POST /v1/events` in CloudEvents batch mode with the unit's Bearer key.
- `SdkChannel`: `connectors.sdk.LiandongClient` per unit, straight to the broker.
- `SpreadsheetChannel`: writes the provincial platform's case-list export (XLSX) and imports it
  with the real importer (`connectors.spreadsheet.importer.run`).

Every channel returns only after the hub acknowledged (202 or broker acks), and raises when the
hub refuses anything: the model must produce only events the hub accepts.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import httpx

from connectors.framework import Health, dead_letter, with_retries
from connectors.http_gateway.ingest import BATCH
from connectors.kafka.publisher import KafkaPublisher
from connectors.sdk import LiandongClient
from connectors.simulator.profile import GATEWAY, SDK, SPREADSHEET
from connectors.simulator.simulated import SimulatedEvent
from connectors.simulator.timing import CST
from connectors.spreadsheet.importer import CONNECTOR as SPREADSHEET_CONNECTOR
from connectors.spreadsheet.importer import ImportOptions, run
from connectors.spreadsheet.mapping import DEFAULT_MAPPING, ColumnMapping
from events.catalog import Catalog
from events.directory import Directory
from events.envelope import Envelope
from events.registry import SchemaRegistry

# The gateway takes at most 1,000 events and 1 MiB per request; stay well inside both.
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 768 * 1024
EXPORT_HEADERS = ("案件编号", "立案日期", "镇街", "案件类型", "案件名称", "是否重大案件")


class Channel(Protocol):
    name: str
    counts: Counter[str]

    async def publish(self, events: Sequence[SimulatedEvent]) -> None: ...

    async def close(self) -> None: ...


class HubRefused(RuntimeError):
    """The hub refused a simulated event: a bug in the model, never a reason to carry on."""


def by_unit(events: Iterable[SimulatedEvent]) -> dict[str, list[SimulatedEvent]]:
    groups: dict[str, list[SimulatedEvent]] = defaultdict(list)
    for event in events:
        groups[event.unit].append(event)
    return groups


# A 503 (the broker did not acknowledge) and a lost connection are retried with the same ids.
_TRANSIENT = (OSError, TimeoutError, httpx.TransportError)


class GatewayChannel:
    name = GATEWAY

    def __init__(
        self, api_url: str, keys: Mapping[str, str], *, concurrency: int = 4, timeout_s: float = 60.0
    ) -> None:
        self._url = api_url.rstrip("/") + "/v1/events"
        self._keys = keys
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self._slots = asyncio.Semaphore(concurrency)
        self.counts: Counter[str] = Counter()
        self.requests = 0

    async def publish(self, events: Sequence[SimulatedEvent]) -> None:
        await asyncio.gather(*(self._unit(unit, batch) for unit, batch in by_unit(events).items()))

    async def _unit(self, unit: str, events: list[SimulatedEvent]) -> None:
        key = self._keys.get(unit)
        if key is None:
            raise HubRefused(f"no gateway key for unit {unit}")
        for chunk in _chunks([e.cloudevent() for e in events]):
            body = json.dumps(chunk, ensure_ascii=False).encode("utf-8")
            async with self._slots:
                await with_retries(partial(self._post, key, body), base_delay_s=0.5, retry_on=_TRANSIENT)
            self.requests += 1
        self.counts[unit] += len(events)

    async def _post(self, key: str, body: bytes) -> None:
        response = await self._client.post(
            self._url, content=body, headers={"Authorization": f"Bearer {key}", "Content-Type": BATCH}
        )
        if response.status_code == 503:
            raise OSError(f"gateway: broker unavailable ({response.text[:200]})")  # retried
        if response.status_code != 202:
            raise HubRefused(f"gateway answered {response.status_code}: {response.text[:2000]}")

    async def close(self) -> None:
        await self._client.aclose()


def _chunks(items: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    size = 0
    for item in items:
        item_size = len(json.dumps(item, ensure_ascii=False).encode("utf-8")) + 1
        if chunk and (len(chunk) >= MAX_BATCH_EVENTS or size + item_size > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        yield chunk


class _Clients:
    """One `LiandongClient` per unit, opened on first use and closed together."""

    def __init__(
        self,
        bootstrap: str,
        catalog: Catalog,
        directory: Directory,
        registry: SchemaRegistry,
        partitions: int,
    ) -> None:
        self._args = (bootstrap, catalog, directory, registry, partitions)
        self._clients: dict[str, LiandongClient] = {}
        self._stack = AsyncExitStack()

    async def get(self, unit: str) -> LiandongClient:
        client = self._clients.get(unit)
        if client is None:
            bootstrap, catalog, directory, registry, partitions = self._args
            client = LiandongClient(
                bootstrap,
                unit,
                registry=registry,
                catalog=catalog,
                directory=directory,
                partitions=partitions,
            )
            self._clients[unit] = await self._stack.enter_async_context(client)
        return client

    async def close(self) -> None:
        await self._stack.aclose()


class SdkChannel:
    name = SDK

    def __init__(self, clients: _Clients) -> None:
        self._clients = clients
        self.counts: Counter[str] = Counter()

    async def publish(self, events: Sequence[SimulatedEvent]) -> None:
        await asyncio.gather(*(self._unit(unit, batch) for unit, batch in by_unit(events).items()))

    async def _unit(self, unit: str, events: list[SimulatedEvent]) -> None:
        client = await self._clients.get(unit)
        envelopes = [
            client.event(e.type, subject=e.subject, data=dict(e.data), record_id=e.record_id, time=e.time)
            for e in events
        ]
        await with_retries(lambda: client.publish(*envelopes))
        self.counts[unit] += len(events)

    async def close(self) -> None:
        await self._clients.close()


ImportDone = Callable[[Health, str, str], Awaitable[None]]


class _Recording:
    """The importer's client, noting the event ids it publishes, to check them against the model."""

    def __init__(self, client: LiandongClient) -> None:
        self._client = client
        self.ids: list[str] = []

    def event(
        self,
        short_type: str,
        *,
        subject: str,
        data: dict[str, Any],
        record_id: str | None = None,
        time: datetime | None = None,
    ) -> Envelope:
        return self._client.event(short_type, subject=subject, data=data, record_id=record_id, time=time)

    async def publish(self, *events: Envelope) -> None:
        await self._client.publish(*events)
        self.ids.extend(e.id for e in events)


class SpreadsheetChannel:
    """A unit that uploads the provincial platform's weekly case-list export."""

    name = SPREADSHEET

    def __init__(
        self,
        clients: _Clients,
        bootstrap: str,
        work_dir: Path,
        directory: Directory,
        *,
        partitions: int = 6,
        on_import: ImportDone | None = None,
    ) -> None:
        self._clients = clients
        self._dlq = KafkaPublisher(bootstrap, client_id="liandong-simulator-dlq", partitions=partitions)
        self._work_dir = work_dir
        self._directory = directory
        self._mapping = ColumnMapping.load(directory)
        self._on_import = on_import
        self.counts: Counter[str] = Counter()
        self.files: list[Path] = []

    async def publish(self, events: Sequence[SimulatedEvent]) -> None:
        uploads: dict[tuple[str, datetime], list[SimulatedEvent]] = defaultdict(list)
        for event in events:
            uploads[(event.unit, event.publish_at)].append(event)
        for (unit, at), batch in sorted(uploads.items()):
            await self._upload(unit, at, batch)

    async def _upload(self, unit: str, at: datetime, events: list[SimulatedEvent]) -> None:
        folder = self._work_dir / unit
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"案件列表导出-{at.astimezone(CST):%Y%m%d}.xlsx"
        write_export(path, events, self._directory)
        report = path.with_suffix(".import-report.csv")
        options = ImportOptions(
            path=path, unit=unit, report_path=report, state_path=report.with_suffix(".state.json")
        )
        health = Health(SPREADSHEET_CONNECTOR, "inbound")
        client = _Recording(await self._clients.get(unit))

        async def to_dead_letters(original: bytes, reason: str, detail: str, key: bytes) -> None:
            await dead_letter(self._dlq, SPREADSHEET_CONNECTOR, original, reason, detail, key)

        result = await run(options, client, self._mapping, health, to_dead_letters)
        health.ran(not result.problems, f"{health.counts['published']} published (simulated export)")
        if self._on_import is not None:
            await self._on_import(health, unit, path.name)
        if result.problems:
            raise HubRefused(f"import of {path} refused rows: {result.problems[:5]}")
        expected = sorted(e.event_id for e in events)
        if sorted(client.ids) != expected and not result.skipped:
            raise HubRefused(f"import of {path} published other ids than the model's")
        self.files.append(path)
        self.counts[unit] += len(events)

    async def close(self) -> None:
        await self._dlq.close()


def write_export(path: Path, events: Sequence[SimulatedEvent], directory: Directory) -> None:
    """The provincial platform's case-list export (XLSX) holding these filings, as a clerk downloads it."""
    import openpyxl  # type: ignore[import-untyped]

    doc = json.loads(DEFAULT_MAPPING.read_text(encoding="utf-8"))
    category_zh = {code: zh for zh, code in doc["categories"].items()}
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(EXPORT_HEADERS)
    for event in events:
        data = event.data
        sheet.append(
            [
                event.subject,
                f"{event.time.astimezone(CST):%Y-%m-%d}",
                directory.townships[str(data["township"])].name_zh,
                category_zh.get(str(data["category"]), str(data["category"])),
                data["title"],
                "是" if data.get("requires_legal_review") else "否",
            ]
        )
    book.save(path)


def open_channels(
    *,
    api_url: str,
    keys: Mapping[str, str],
    bootstrap: str,
    work_dir: Path,
    catalog: Catalog,
    directory: Directory,
    registry: SchemaRegistry,
    partitions: int = 6,
    on_import: ImportDone | None = None,
) -> dict[str, Channel]:
    """The three channels, sharing one SDK client per unit."""
    clients = _Clients(bootstrap, catalog, directory, registry, partitions)
    return {
        GATEWAY: GatewayChannel(api_url, keys),
        SDK: SdkChannel(clients),
        SPREADSHEET: SpreadsheetChannel(
            clients, bootstrap, work_dir, directory, partitions=partitions, on_import=on_import
        ),
    }
