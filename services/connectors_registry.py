"""The connectors of this hub, their configuration and their health, for the CLI and the API."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.email.sender import EmailTarget
from connectors.framework import Health
from connectors.outbox.relay import relay_status
from events.directory import Directory
from projections.schema import connector_runs, deliveries
from services.api.render import iso
from services.settings import Settings
from services.webhooks import load_subscriptions


@dataclass(frozen=True, slots=True)
class ConnectorInfo:
    name: str
    kind: str  # inbound | outbound
    what_zh: str
    what_en: str
    configured: bool
    detail: str


def connectors(settings: Settings) -> list[ConnectorInfo]:
    subscriptions = load_subscriptions(settings.webhooks_file, Directory.load())
    hooks = [n for n, s in subscriptions.items() if not isinstance(s.target, EmailTarget)]
    mails = [n for n, s in subscriptions.items() if isinstance(s.target, EmailTarget)]
    return [
        ConnectorInfo(
            "http-gateway",
            "inbound",
            "HTTP 接入网关",
            "CloudEvents over HTTP",
            True,
            f"POST http://{settings.api_host}:{settings.api_port}/v1/events",
        ),
        ConnectorInfo(
            "kafka-sdk",
            "inbound",
            "Kafka 直连 SDK",
            "Python SDK for Kafka producers",
            True,
            "connectors.sdk.LiandongClient",
        ),
        ConnectorInfo(
            "spreadsheet-import",
            "inbound",
            "表格导入",
            "CSV and XLSX case lists",
            True,
            "liandong import FILE --source UNIT",
        ),
        ConnectorInfo(
            "outbox-relay",
            "inbound",
            "数据库发件箱",
            "Agency PostgreSQL outbox table",
            settings.outbox_dsn is not None,
            f"liandong outbox-relay, table {settings.outbox_table}"
            if settings.outbox_dsn
            else "LIANDONG_OUTBOX_DSN not set",
        ),
        ConnectorInfo(
            "webhook",
            "outbound",
            "预警推送（Webhook）",
            "Signed alert webhooks",
            bool(hooks),
            ", ".join(hooks) or "no targets in LIANDONG_WEBHOOKS_FILE",
        ),
        ConnectorInfo(
            "email",
            "outbound",
            "预警邮件",
            "Alert email",
            bool(mails),
            ", ".join(mails) or "no email targets in LIANDONG_WEBHOOKS_FILE",
        ),
        ConnectorInfo(
            "publication-feed",
            "outbound",
            "执法公示",
            "Publication feed (JSON, Atom)",
            True,
            "GET /v1/publications, /v1/publications.atom",
        ),
    ]


async def delivery_health(engine: AsyncEngine) -> dict[str, dict[str, int]]:
    """Deliveries by target and status: what is pending, delivered, failed."""
    d = deliveries.c
    async with engine.connect() as conn:
        rows = await conn.execute(select(d.target, d.status, func.count()).group_by(d.target, d.status))
        out: dict[str, dict[str, int]] = {}
        for target, status, count in rows:
            out.setdefault(target, {})[status] = int(count)
    return out


def as_json(info: ConnectorInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "kind": info.kind,
        "what_zh": info.what_zh,
        "what_en": info.what_en,
        "configured": info.configured,
        "detail": info.detail,
    }


async def outbox_health(settings: Settings) -> dict[str, object] | None:
    """The outbox relay's position and backlog, when this hub is configured with an outbox."""
    if settings.outbox_dsn is None:
        return None
    try:
        return dict(await relay_status(settings.outbox_dsn, settings.outbox_table))
    except (OSError, ValueError, asyncpg.PostgresError) as exc:
        return {"table": settings.outbox_table, "error": repr(exc)[:200]}


async def record_run(engine: AsyncEngine, health: Health, source_unit: str | None, input_name: str) -> None:
    """Keep the outcome of a one-shot connector run, for `connectors status` and the API."""
    async with engine.begin() as conn:
        await conn.execute(
            insert(connector_runs).values(
                run_id=uuid.uuid4().hex,
                connector=health.name,
                source_unit=source_unit,
                input=input_name,
                finished_at=health.last_run_at or datetime.now(UTC),
                ok=health.ok,
                detail=health.detail[:2000],
                counts=json.dumps(health.counts),
            )
        )


async def recent_runs(engine: AsyncEngine, limit: int = 20) -> list[dict[str, object]]:
    r = connector_runs.c
    async with engine.connect() as conn:
        rows = await conn.execute(select(connector_runs).order_by(r.finished_at.desc()).limit(limit))
        return [
            {
                "connector": row.connector,
                "source_unit": row.source_unit,
                "input": row.input,
                "finished_at": iso(row.finished_at),
                "ok": row.ok,
                "detail": row.detail,
                "counts": json.loads(row.counts),
            }
            for row in rows
        ]
