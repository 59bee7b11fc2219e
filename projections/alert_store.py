"""The alert inbox: alerts, who receives them, and the webhook deliveries they cause.

Alert events are keyed by clock id, so one clock's raise, acknowledgement and withdrawal arrive in
order on one partition.

An announced anomaly (`anomaly.detected`) is an alert too, of level `risk`: its clock id is
"anomaly:" + anomaly id, which is also the subject its acknowledgements carry. Its deadline and
threshold are the moment it was detected; nothing is overdue about it. It is withdrawn when the
anomaly is resolved (`alert.withdrawn`, published by the anomaly announcer).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from events.envelope import TYPE_PREFIX, Envelope
from projections.bulk import any_of, merge
from projections.runtime import Positioned
from projections.schema import alert_recipients, alerts, deliveries, event_history

RAISED = TYPE_PREFIX + "alert.raised.v1"
WITHDRAWN = TYPE_PREFIX + "alert.withdrawn.v1"
ACKNOWLEDGED = TYPE_PREFIX + "alert.acknowledged.v1"
ANOMALY_DETECTED = TYPE_PREFIX + "anomaly.detected.v1"
RISK = "risk"
# Delivery ids of alerts whose id is not a UUID (an anomaly id may be any string).
_DELIVERY_NAMESPACE = uuid.UUID("0f4b3c1e-8d2a-4e6f-b7c9-1a2d3e4f5a6b")


def _json_default(value: Any) -> str:
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


class AlertProjection:
    name = "alerts"
    tables = ("alerts", "alert_recipients")  # what `liandong projections rebuild` swaps

    def __init__(self, webhook_targets: Mapping[str, Sequence[str]] | None = None) -> None:
        """`webhook_targets`: unit id -> names of the webhook targets that unit subscribed."""
        self._targets = webhook_targets or {}

    def handles(self, event_type: str) -> bool:
        return event_type in (RAISED, WITHDRAWN, ACKNOWLEDGED, ANOMALY_DETECTED)

    async def write(self, conn: AsyncConnection, events: Sequence[Positioned]) -> None:
        ordered = sorted((p.event for p in events), key=lambda e: e.time)
        raised = [
            e if e.type == RAISED else _as_alert(e) for e in ordered if e.type in (RAISED, ANOMALY_DETECTED)
        ]
        if raised:
            rows = [
                {
                    "alert_id": e.data["alert_id"],
                    "clock_id": e.subject,
                    "rule_id": e.data["rule_id"],
                    "rule_name_zh": e.data["rule_name_zh"],
                    "rule_name_en": e.data["rule_name_en"],
                    "citation": e.data["citation"],
                    "level": e.data["level"],
                    "about_area": e.data["about_area"],
                    "about_subject": e.data["about_subject"],
                    "responsible_unit": e.data.get("responsible_unit"),
                    "township": e.data.get("township"),
                    "case_id": e.data.get("case_id"),
                    "deadline": e.data["deadline"],
                    "threshold": e.data["threshold"],
                    "overdue_seconds": e.data["overdue_seconds"],
                    "provisional": e.data["provisional"],
                    "proposed_order": json.dumps(e.data.get("proposed_order"), default=_json_default)
                    if e.data.get("proposed_order")
                    else None,
                    "raised_at": e.time,
                }
                for e in raised
            ]
            await merge(conn, alerts, rows, _new_alerts)
            recipients = [
                {"alert_id": e.data["alert_id"], "unit_id": unit}
                for e in raised
                for unit in e.data["recipients"]
            ]
            await merge(
                conn,
                alert_recipients,
                recipients,
                _new_recipients,
            )
            await self._queue_deliveries(conn, raised)
            await _withdrawn_before_raised(conn, [e for e in raised if e.data["level"] == RISK])
        for e in ordered:
            if e.type == WITHDRAWN:
                await conn.execute(
                    update(alerts)
                    .where(alerts.c.alert_id == e.data["alert_id"], alerts.c.withdrawn_at.is_(None))
                    .values(withdrawn_at=e.time)
                )
            elif e.type == ACKNOWLEDGED:
                await conn.execute(
                    update(alerts)
                    .where(alerts.c.alert_id == e.data["alert_id"], alerts.c.acknowledged_at.is_(None))
                    .values(acknowledged_at=e.time, acknowledged_by=e.data["by_unit"])
                )

    async def _queue_deliveries(self, conn: AsyncConnection, raised: Sequence[Any]) -> None:
        # Due from the moment the alert was raised: deterministic, and never in a future the
        # delivery loop's clock has not reached.
        rows = [
            {
                # Stable per alert, unit and target: receivers deduplicate on it across retries.
                "delivery_id": _delivery_id(e.data["alert_id"], unit, target),
                "alert_id": e.data["alert_id"],
                "unit_id": unit,
                "target": target,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": e.time,
                "last_error": None,
                "created_at": e.time,
                "delivered_at": None,
            }
            for e in raised
            for unit in e.data["recipients"]
            for target in self._targets.get(unit, ())
        ]
        await merge(conn, deliveries, rows, _new_deliveries)


def _as_alert(e: Envelope) -> Envelope:
    """An announced anomaly, in the shape of an `alert.raised` event of level `risk`."""
    d = e.data
    data = {
        "alert_id": d["anomaly_id"],
        "rule_id": "anomaly." + d["kind"],
        "rule_name_zh": d["name_zh"],
        "rule_name_en": d["name_en"],
        "citation": d["basis"],
        "level": RISK,
        "about_area": d["about_area"],
        "about_subject": d["about_subject"],
        "responsible_unit": d.get("responsible_unit"),
        "township": d.get("township"),
        "case_id": d.get("case_id"),
        "deadline": d["detected_at"],
        "threshold": d["detected_at"],
        "overdue_seconds": 0,
        "provisional": False,
        "proposed_order": None,
        "recipients": d["recipients"],
    }
    return replace(e, type=RAISED, subject=anomaly_clock_id(d["anomaly_id"]), data=data)


def anomaly_clock_id(anomaly_id: str) -> str:
    """The clock id of an anomaly's risk alert: the subject of its acknowledgements and withdrawal."""
    return "anomaly:" + anomaly_id


async def _withdrawn_before_raised(conn: AsyncConnection, raised: Sequence[Envelope]) -> None:
    """Apply withdrawals the event history holds from before their risk alert was raised.

    A risk alert is raised from the anomaly topic and withdrawn on the alert topic. Live, the
    withdrawal is only published once the alert row exists; but a rebuild replays both topics side by
    side, and a withdrawal applied first found no row to mark. Republishing it would not help: the
    event history already holds its id."""
    if not raised:
        return
    h = event_history.c
    by_clock = {e.subject: e.data["alert_id"] for e in raised}
    rows = await conn.execute(
        select(h.subject, func.min(h.occurred_at))
        .where(h.area == "alert", any_of(conn, h.subject, sorted(by_clock)), h.type == WITHDRAWN)
        .group_by(h.subject)
    )
    for subject, at in rows.all():
        await conn.execute(
            update(alerts)
            .where(alerts.c.alert_id == by_clock[subject], alerts.c.withdrawn_at.is_(None))
            .values(withdrawn_at=at)
        )


def _delivery_id(alert_id: str, unit: str, target: str) -> str:
    try:
        base = uuid.UUID(alert_id)
    except ValueError:
        base = uuid.uuid5(_DELIVERY_NAMESPACE, alert_id)
    return uuid.uuid5(base, f"{unit}|{target}").hex


def _new_alerts(stmt: Any) -> Any:
    return stmt.on_conflict_do_nothing(index_elements=["alert_id"])


def _new_recipients(stmt: Any) -> Any:
    return stmt.on_conflict_do_nothing(index_elements=["alert_id", "unit_id"])


def _new_deliveries(stmt: Any) -> Any:
    return stmt.on_conflict_do_nothing(index_elements=["delivery_id"])
