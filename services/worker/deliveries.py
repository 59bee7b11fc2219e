"""The webhook delivery loop: claim due deliveries, send each once, record what happened.

A delivery is claimed by moving its next attempt a lease ahead, in its own short transaction, so
the HTTP call never holds a database lock and a worker that dies mid-call only delays it. Failed
deliveries stay in the table, visible through the API, until someone retries them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.email.sender import EmailSender, EmailTarget
from connectors.framework import ConnectorMetrics
from connectors.webhook.sender import Outcome, RetryPolicy, WebhookSender
from projections.schema import alerts, deliveries
from services.timesource import Now
from services.webhooks import Subscription

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=2)


class DeliveryLoop:
    def __init__(
        self,
        engine: AsyncEngine,
        subscriptions: Mapping[str, Subscription],
        sender: WebhookSender,
        policy: RetryPolicy,
        now: Now,
        batch: int = 50,
        mailer: EmailSender | None = None,
        metrics: ConnectorMetrics | None = None,
        failed: Counter | None = None,
        last_success: Gauge | None = None,
    ) -> None:
        self._engine = engine
        self._subscriptions = subscriptions
        self._sender = sender
        self._policy = policy
        self._now = now
        self._batch = batch
        self._mailer = mailer or EmailSender()
        self._metrics = metrics
        self._failed = failed  # liandong_deliveries_failed_total{channel}: every failed attempt
        self._last_success = last_success

    async def tick(self) -> int:
        now = self._now()
        claimed = await self._claim(now)
        if self._metrics is not None:
            await self._measure_backlog()
        for delivery_id, alert_id, target_name, attempts in claimed:
            await self._attempt(delivery_id, alert_id, target_name, attempts)
        return len(claimed)

    async def _claim(self, now: datetime) -> list[tuple[str, str, str, int]]:
        d = deliveries.c
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(d.delivery_id, d.alert_id, d.target, d.attempts)
                    .where(d.status == "pending", d.next_attempt_at <= now)
                    .order_by(d.next_attempt_at)
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if rows:
                await conn.execute(
                    update(deliveries)
                    .where(d.delivery_id.in_([r.delivery_id for r in rows]))
                    .values(next_attempt_at=now + LEASE)
                )
        return [(r.delivery_id, r.alert_id, r.target, r.attempts) for r in rows]

    async def _attempt(self, delivery_id: str, alert_id: str, target_name: str, attempts: int) -> None:
        subscription = self._subscriptions.get(target_name)
        if subscription is None:
            await self._record(
                delivery_id, "failed", attempts, None, f"target {target_name!r} is not configured"
            )
            return
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(alerts).where(alerts.c.alert_id == alert_id))).first()
        if row is None:
            await self._record(delivery_id, "failed", attempts, None, "alert not found")
            return
        alert = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row._mapping.items()}
        target = subscription.target
        if isinstance(target, EmailTarget):
            result = await self._mailer.deliver(target, delivery_id, *email_text(alert))
        else:
            body = json.dumps(alert, ensure_ascii=False, sort_keys=True).encode()
            result = await self._sender.deliver(target, delivery_id, body)
        attempts += 1
        now = self._now()
        connector = "email" if isinstance(target, EmailTarget) else "webhook"
        self._count(connector, "read")
        if result.outcome is Outcome.DELIVERED:
            self._count(connector, "published")
            if self._last_success is not None:
                self._last_success.labels(connector=connector).set_to_current_time()
            await self._record(delivery_id, "delivered", attempts, None, None, delivered_at=now)
            return
        delay = (
            None
            if result.outcome is Outcome.PERMANENT
            else self._policy.next_delay(attempts, result.retry_after_s)
        )
        error = f"{result.reason}: {result.detail}"[:1000]
        if self._failed is not None:
            self._failed.labels(channel=connector).inc()
        self._count(connector, "rejected" if delay is None else "retried")
        if delay is None:
            log.warning(
                "webhook delivery %s to %s failed for good: %s", delivery_id, target_name, result.reason
            )
            await self._record(delivery_id, "failed", attempts, None, error)
        else:
            await self._record(delivery_id, "pending", attempts, now + timedelta(seconds=delay), error)

    def _count(self, connector: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.count(connector, outcome)

    async def _measure_backlog(self) -> None:
        d = deliveries.c
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(d.target, func.count()).where(d.status == "pending").group_by(d.target)
            )
            pending = {target: int(n) for target, n in rows}
        assert self._metrics is not None
        for kind in ("webhook", "email"):
            names = [
                n
                for n, s in self._subscriptions.items()
                if isinstance(s.target, EmailTarget) == (kind == "email")
            ]
            self._metrics.lag.labels(connector=kind).set(sum(pending.get(n, 0) for n in names))

    async def _record(
        self,
        delivery_id: str,
        status: str,
        attempts: int,
        next_attempt_at: datetime | None,
        error: str | None,
        delivered_at: datetime | None = None,
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.delivery_id == delivery_id)
                .values(
                    status=status,
                    attempts=attempts,
                    next_attempt_at=next_attempt_at,
                    last_error=error,
                    delivered_at=delivered_at,
                )
            )


LEVELS_ZH = {
    "yellow": "黄色预警",
    "red": "红色预警（已超期）",
    "escalated": "升级督办",
    "re_escalated": "再次升级督办",
    "risk": "风险预警",
}


def email_text(alert: Mapping[str, Any]) -> tuple[str, str]:
    """Subject and body of an alert email, in Chinese with English beneath."""
    level = str(alert["level"])
    subject = f"[联动{LEVELS_ZH.get(level, level)}] {alert['rule_name_zh']} {alert['about_subject']}"
    if level == "risk":
        return subject, _risk_text(alert)
    overdue_days = int(alert["overdue_seconds"]) // 86400
    # A yellow alert comes before the deadline: saying "0 days overdue" would misread it.
    due_zh, due_en = (
        ("临近期限，尚未超期", "not yet overdue")
        if overdue_days <= 0 and level == "yellow"
        else (f"已超期 {overdue_days} 天", f"{overdue_days} days overdue")
    )
    body = (
        f"{LEVELS_ZH.get(level, level)}：{alert['rule_name_zh']}\n"
        f"事项：{alert['about_area']} {alert['about_subject']}\n"
        f"责任单位：{alert['responsible_unit']}\n"
        f"期限：{alert['deadline']}（{due_zh}）\n"
        f"依据：{alert['citation']}\n\n"
        f"{level} alert: {alert['rule_name_en']} for {alert['about_area']} {alert['about_subject']}, "
        f"responsible unit {alert['responsible_unit']}, deadline {alert['deadline']}, "
        f"{due_en}.\nAlert id: {alert['alert_id']}\n"
    )
    return subject, body


def _risk_text(alert: Mapping[str, Any]) -> str:
    """An announced anomaly has no deadline to be overdue on: its name, what it is about, its basis."""
    unit = alert["responsible_unit"] or "—"
    return (
        f"风险预警：{alert['rule_name_zh']}\n"
        f"事项：{alert['about_area']} {alert['about_subject']}\n"
        f"相关单位：{unit}\n"
        f"发现时间：{alert['raised_at']}\n"
        f"依据：{alert['citation']}\n\n"
        f"Risk alert: {alert['rule_name_en']} for {alert['about_area']} {alert['about_subject']}, "
        f"unit concerned {unit}, detected at {alert['raised_at']}.\n"
        f"Alert id: {alert['alert_id']}\n"
    )
