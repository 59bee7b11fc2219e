"""The connectors of this hub, their configuration and their health, for the CLI and the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.email.sender import EmailTarget
from connectors.outbox.relay import relay_status
from events.directory import Directory
from projections.schema import deliveries
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
            True,
            "connectors.outbox.OutboxRelay",
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
