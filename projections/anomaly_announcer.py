"""The anomaly announcer: each anomaly a person must act on becomes one `anomaly.detected` event.

Three-systems, risk and flow anomalies are announced; data-quality ones are not (they are noisy and
heal themselves when the late fact arrives). The announcer claims unannounced rows with `FOR UPDATE
SKIP LOCKED`, publishes (acknowledged by the broker), then records `announced_at` in the same
transaction. A crash or a failed publish leaves `announced_at` NULL, so the next pass announces the
row again; the event id is derived from the anomaly id, so every consumer keeps one copy.

It also withdraws: an anomaly resolved after it was announced (the legal review arrived late, late
filings undid a case-flow finding) whose risk alert is still open gets one `alert.withdrawn` event.
Nothing is recorded on the anomaly: the alert row itself says whether it was withdrawn, and until
the alert projection has caught up every pass publishes the same event id again, which the event
history deduplicates. An anomaly that reopens after its alert was withdrawn keeps that alert
withdrawn: it is open again in `GET /v1/anomalies` and the analysis, not in the inbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from events.directory import Directory
from events.envelope import TYPE_PREFIX, Envelope
from projections.alert_store import RISK, anomaly_clock_id
from projections.anomalies import REPEAT_INSPECTION, anomaly_id
from projections.bulk import any_of
from projections.schema import alerts, anomalies, cases, inspections

DETECTED = TYPE_PREFIX + "anomaly.detected.v1"
WITHDRAWN = TYPE_PREFIX + "alert.withdrawn.v1"
RESOLVED = "anomaly_resolved"
HUB_SOURCE = "liandong.hub"
ANNOUNCED_CATEGORIES = ("three_systems", "risk", "flow")
_NAMESPACE = uuid.UUID("3c0d6f0e-5a4b-4f5e-9a51-2b7d8c1e6a40")


class AnomalySink(Protocol):
    async def publish(self, events: Sequence[Envelope]) -> None:
        """Return only once the broker acknowledged every event (each on its area's topic)."""
        ...


@dataclass(frozen=True, slots=True)
class KindName:
    zh: str
    en: str
    basis: str


KINDS: Mapping[str, KindName] = {
    "legal_review_missing": KindName(
        "重大案件决定未经法制审核",
        "Major-case decision without a completed legal review",
        "《行政处罚法》第58条（重大执法决定法制审核） | "
        "Administrative Penalty Law Art. 58 (legal review of major decisions)",
    ),
    "repeat_inspection": KindName(
        "同一经营者30日内被不同单位重复检查",
        "Same business inspected by different units within 30 days",
        "《优化营商环境条例》关于减少检查频次、避免多头重复检查的要求；浙江“综合查一次”风险预警做法 | "
        "Regulation on Optimizing the Business Environment: fewer inspections, no repeated inspections "
        "by several departments; Zhejiang's 'inspect once' risk alerts",
    ),
    "case_flow_spike": KindName(
        "镇街案件量异常激增",
        "Unusual spike in a township's case flow",
        "区司法局行政执法协调监督：案件量分析研判（本地规则） | "
        "District Justice Bureau enforcement supervision: case-flow analysis (local rules)",
    ),
    "case_flow_silence": KindName(
        "镇街案件量异常沉寂",
        "Unusual silence in a township's case flow",
        "区司法局行政执法协调监督：案件量分析研判（本地规则） | "
        "District Justice Bureau enforcement supervision: case-flow analysis (local rules)",
    ),
}


def kind_name(kind: str) -> KindName:
    """A kind added later without a name here is still announced, under its code."""
    return KINDS.get(kind) or KindName(
        f"异常：{kind}", f"Anomaly: {kind}", "见分析研判规则 | See the analysis rules"
    )


def event_id(anomaly_id: str) -> str:
    """One event per anomaly, whoever announces it and however often."""
    return str(uuid.uuid5(_NAMESPACE, f"anomaly.detected|{anomaly_id}"))


def withdrawal_id(anomaly_id: str, resolved_at: datetime) -> str:
    """One withdrawal per resolution of an anomaly, however often it is published."""
    return str(uuid.uuid5(_NAMESPACE, f"{anomaly_id}|withdrawn|{_utc(resolved_at).isoformat()}"))


def _pair_id(first: str, second: str) -> str:
    """The id `projections.anomalies.RepeatPair` gives the pair of these two inspections."""
    a, b = sorted((first, second))
    return anomaly_id(REPEAT_INSPECTION, f"{a}|{b}")


def _utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the store knows about an anomaly's subject beyond the anomaly row."""

    township: str | None = None
    responsible: str | None = None
    involved: tuple[str, ...] = ()


class AnomalyAnnouncer:
    def __init__(self, db: AsyncEngine, directory: Directory, sink: AnomalySink, batch: int = 200) -> None:
        self._db = db
        self._directory = directory
        self._sink = sink
        self._batch = batch
        self._offices: dict[str, list[str]] = {}
        for unit in sorted(directory.units.values(), key=lambda u: u.id):
            if unit.kind == "enforcement_office" and unit.home_township:
                self._offices.setdefault(unit.home_township, []).append(unit.id)
        self._supervisors = sorted(u.id for u in directory.units.values() if u.kind == "supervision")

    async def announce(self, now: datetime) -> int:
        """Announce every unannounced anomaly; the number announced."""
        total = 0
        while True:
            announced, claimed = await self._announce_batch(now)
            total += announced
            if claimed < self._batch:
                return total

    async def _announce_batch(self, now: datetime) -> tuple[int, int]:
        a = anomalies.c
        async with self._db.begin() as conn:
            rows = (
                await conn.execute(
                    select(anomalies)
                    .where(
                        a.announced_at.is_(None),
                        a.resolved_at.is_(None),
                        a.category.in_(ANNOUNCED_CATEGORIES),
                    )
                    .order_by(a.detected_at, a.anomaly_id)
                    .limit(self._batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0, 0
            facts = await self._facts(conn, rows)
            events = [self._event(row, facts.get(row.anomaly_id, _Facts())) for row in rows]
            # Published before it is recorded: if the broker fails, the rows stay unannounced.
            await self._sink.publish(events)
            await conn.execute(
                update(anomalies)
                .where(any_of(conn, a.anomaly_id, [r.anomaly_id for r in rows]))
                .values(announced_at=now)
            )
        return len(events), len(rows)

    async def withdraw(self) -> int:
        """Withdraw the open risk alert of every resolved anomaly; the number of withdrawals published.

        Pages by anomaly id: nothing changes in the store until the alert projection applies the
        withdrawals, so the same rows would come back first on every page."""
        a, t = anomalies.c, alerts.c
        total, after = 0, ""
        while True:
            async with self._db.connect() as conn:
                rows = (
                    await conn.execute(
                        select(a.anomaly_id, a.kind, a.resolved_at, t.case_id)
                        .select_from(anomalies.join(alerts, t.alert_id == a.anomaly_id))
                        .where(
                            a.resolved_at.is_not(None),
                            t.withdrawn_at.is_(None),
                            t.level == RISK,
                            a.anomaly_id > after,
                        )
                        .order_by(a.anomaly_id)
                        .limit(self._batch)
                    )
                ).all()
            if not rows:
                return total
            await self._sink.publish([_withdrawal(*r) for r in rows])
            total += len(rows)
            if len(rows) < self._batch:
                return total
            after = rows[-1].anomaly_id

    async def _facts(self, conn: AsyncConnection, rows: Sequence[Row[Any]]) -> dict[str, _Facts]:
        out: dict[str, _Facts] = {}
        case_rows = [r for r in rows if r.area == "case"]
        if case_rows:
            c = cases.c
            known = {
                r.case_id: r
                for r in await conn.execute(
                    select(c.case_id, c.township, c.handling_unit).where(
                        any_of(conn, c.case_id, sorted({r.subject for r in case_rows}))
                    )
                )
            }
            for r in case_rows:
                case = known.get(r.subject)
                if case is not None:
                    out[r.anomaly_id] = _Facts(case.township, case.handling_unit)
        for r in rows:
            if r.kind == REPEAT_INSPECTION:
                out[r.anomaly_id] = await self._inspection_facts(conn, r)
        return out

    async def _inspection_facts(self, conn: AsyncConnection, anomaly: Row[Any]) -> _Facts:
        """Both units of a repeat: the later inspection (the anomaly's subject) and the earlier one,
        found as the other inspection of the business whose pair id is the anomaly's id."""
        i = inspections.c
        later = (
            await conn.execute(
                select(i.subject, i.inspecting_unit, i.township, i.business_key).where(
                    i.subject == anomaly.subject
                )
            )
        ).first()
        if later is None:
            return _Facts()
        involved: list[str] = []
        if later.business_key is not None:
            others = await conn.execute(
                select(i.subject, i.inspecting_unit).where(
                    i.business_key == later.business_key, i.subject != later.subject
                )
            )
            involved = [
                unit
                for subject, unit in others
                if unit and _pair_id(later.subject, subject) == anomaly.anomaly_id
            ]
        return _Facts(later.township, later.inspecting_unit, tuple(involved))

    def _recipients(self, township: str | None, units: Iterable[str | None]) -> list[str]:
        offices = self._offices.get(township, []) if township else []
        chosen = [*offices, *self._supervisors, *(u for u in units if u)]
        return [u for u in dict.fromkeys(chosen) if u in self._directory.units]

    def _event(self, row: Row[Any], facts: _Facts) -> Envelope:
        township = row.township or facts.township or (row.subject if row.area == "township" else None)
        if township is not None and township not in self._directory.townships:
            township = None
        responsible = facts.responsible if facts.responsible in self._directory.units else None
        name = kind_name(row.kind)
        detected_at = _utc(row.detected_at)
        data = {
            "anomaly_id": row.anomaly_id,
            "kind": row.kind,
            "category": row.category,
            "name_zh": name.zh,
            "name_en": name.en,
            "basis": name.basis,
            "township": township,
            "about_area": row.area,
            "about_subject": row.subject,
            "detail": row.detail,
            "responsible_unit": responsible,
            "occurred_at": _utc(row.occurred_at),
            "detected_at": detected_at,
            "recipients": self._recipients(township, [responsible, *facts.involved]),
            "case_id": row.subject if row.area == "case" else None,
        }
        return Envelope(event_id(row.anomaly_id), DETECTED, HUB_SOURCE, row.anomaly_id, detected_at, data)


def _withdrawal(anomaly: str, kind: str, resolved: datetime, case_id: str | None) -> Envelope:
    """`alert.withdrawn` for the risk alert of a resolved anomaly, at the moment it was resolved.

    Its subject is the alert's clock id, so it is keyed like the alert's acknowledgements."""
    resolved_at = _utc(resolved)
    name = kind_name(kind)
    data = {
        "alert_id": anomaly,
        "level": RISK,
        "reason": RESOLVED,
        "closed_at": resolved_at,
        "case_id": case_id,
        "note": f"异常已消除，风险预警撤回：{name.zh} | The anomaly was resolved, the risk alert withdrawn: "
        f"{name.en}",
    }
    subject = anomaly_clock_id(anomaly)
    return Envelope(withdrawal_id(anomaly, resolved_at), WITHDRAWN, HUB_SOURCE, subject, resolved_at, data)
