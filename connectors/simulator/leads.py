"""Leads the office does not file, the transfers out that some of them become, and 12345 complaints.

Each function draws one subject's whole story (a `Timeline`) and releases it in time order. Leads
and transfers have duty clocks, so they count in the stall ledger.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from typing import Any

from connectors.simulator.cases import iso
from connectors.simulator.scheduler import Process
from connectors.simulator.world import LATE, NEVER, Timeline, World

OTHER_AGENCIES = (
    "district.ecology-environment",
    "district.market-supervision",
    "district.emergency-management",
    "district.water-affairs",
)


def pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


def lead_not_filed(world: World, township: str, subject: str, day: date) -> Process:
    """A lead the office decides not to file; one in seven is another unit's business and is transferred."""
    rng, days, p = world.rng("lead", subject), world.days, world.profile
    office = world.office(township)
    t = Timeline()
    category = pick(rng, {c.code: c.share for c in p.categories.values()})
    reason = pick(rng, p.weights("leads", "not_filed_reasons"))
    step, mode = world.stall(rng, ["filing"])
    world.ledger.loop("case", step, mode)
    lead_at = days.office_time(day, rng)
    complaint = rng.random() < p.weights("leads", "channels")["complaint"]
    if complaint:
        received = max(world.start, lead_at - timedelta(minutes=rng.randint(30, 600)))
        t.add(
            received,
            office,
            "complaint.received.v1",
            f"{subject}-TS",
            complaint_data(township, category, subject, rng),
        )
    t.add(
        lead_at,
        office,
        "case.lead_received.v1",
        subject,
        {
            "township": township,
            "category": category,
            "handling_unit": office,
            "lead_id": f"XS-{subject}",
            "channel": "complaint" if complaint else rng.choice(("patrol", "inspection", "other")),
            "description": "发现涉嫌违法线索",
            "location": f"{world.directory.townships[township].name_zh}辖区",
        },
    )
    if mode == NEVER:
        yield from t.facts()
        return
    if mode == LATE:
        decided = days.late_after(days.deadline_wd(lead_at, 15), p.span("stall", "late_wd"), rng)
    else:
        decided = days.after_wd(lead_at, p.span("leads", "decide_not_filed_wd"), rng)
    to_unit = _competent_unit(world, township, rng) if reason == "not_within_jurisdiction" else None
    t.add(
        decided,
        office,
        "case.not_filed.v1",
        subject,
        {
            "township": township,
            "category": category,
            "handling_unit": office,
            "lead_id": f"XS-{subject}",
            "reason": reason,
            "referred_to_unit": to_unit,
            "approved_by": "执法机关负责人",
        },
    )
    if complaint:
        t.add(
            days.after_wd(decided, (0, 2), rng),
            office,
            "complaint.answered.v1",
            f"{subject}-TS",
            {"result": "unsubstantiated", "reply": "经核查，不予立案", "case_id": subject},
        )
    if to_unit is not None:
        _transfer_out(world, t, rng, office, to_unit, township, category, f"{subject}-YS", decided)
    yield from t.facts()


def _competent_unit(world: World, township: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.4:
        return world.market(township)
    if roll < 0.7:
        return world.police(township)
    return rng.choice(OTHER_AGENCIES)


def _transfer_out(
    world: World,
    t: Timeline,
    rng: random.Random,
    office: str,
    to_unit: str,
    township: str,
    category: str,
    subject: str,
    found: datetime,
) -> None:
    days, p = world.days, world.profile
    requested = t.add(
        days.after_wd(found, (0, 2), rng),
        office,
        "transfer.requested.v1",
        subject,
        {
            "to_unit": to_unit,
            "township": township,
            "category": category,
            "reason": "不属于本单位职权范围，依法移送",
            "urgent": False,
            "discovered_on": iso(found),
            "materials_count": rng.randint(1, 6),
        },
    )
    step, mode = world.stall(rng, ["acceptance", "result"])
    world.ledger.loop("transfer", step, mode)
    received = t.add(days.after_wd(requested, (0, 1), rng), to_unit, "transfer.received.v1", subject, {})
    if step == "acceptance" and mode == NEVER:
        return
    if step == "acceptance":
        answered = days.late_after(days.deadline_wd(requested, 3), p.span("stall", "late_wd"), rng)
    else:
        answered = days.after_wd(received, (0, 1), rng)
    if step is None and rng.random() < 0.05:
        t.add(
            answered,
            to_unit,
            "transfer.objected.v1",
            subject,
            {"reason": "not_within_jurisdiction", "detail": "经审查不属于本单位管辖"},
        )
        return
    accepted = t.add(answered, to_unit, "transfer.accepted.v1", subject, {"note": "已受理"})
    if step == "result" and mode == NEVER:
        return
    if step == "result":
        result_at = days.late_after(days.deadline_cd(accepted, 90), p.span("stall", "late_wd"), rng)
    else:
        result_at = days.after_cd(accepted, (10, 60), rng)
    result = pick(rng, {"filed": 0.5, "penalised": 0.2, "closed_without_action": 0.25, "not_filed": 0.05})
    t.add(
        result_at,
        to_unit,
        "transfer.result_reported.v1",
        subject,
        {"result": result, "summary": "已依法处理"},
    )


def complaint_data(township: str, category: str, subject: str, rng: random.Random) -> dict[str, Any]:
    return {
        "channel": rng.choices(("hotline_12345", "online", "visit"), (80, 15, 5))[0],
        "township": township,
        "content": "群众反映涉嫌违法问题",
        "anonymous": True,
        "ticket_number": f"12345-{subject}",
        "category": category,
    }


def complaint(world: World, township: str, subject: str, day: date) -> Process:
    """A 12345 complaint handled without a case: answered by the office or the agency it assigned."""
    rng, days = world.rng("complaint", subject), world.days
    office = world.office(township)
    t = Timeline()
    category = pick(rng, {c.code: c.share for c in world.profile.categories.values()})
    received = t.add(
        days.office_time(day, rng),
        office,
        "complaint.received.v1",
        subject,
        complaint_data(township, category, subject, rng),
    )
    answerer = office
    if rng.random() < 0.35:
        answerer = (
            world.police(township) if category in ("noise", "street_vending") else world.market(township)
        )
        t.add(
            days.after_wd(received, (0, 1), rng),
            office,
            "complaint.assigned.v1",
            subject,
            {"to_unit": answerer, "reply_by": iso(days.deadline_wd(received, 10))},
        )
    result = pick(
        rng, {"unsubstantiated": 0.4, "substantiated": 0.3, "partly_substantiated": 0.2, "referred": 0.1}
    )
    t.add(
        days.after_wd(received, (2, 10), rng),
        answerer,
        "complaint.answered.v1",
        subject,
        {"result": result, "reply": "已核查处理并答复", "satisfied": rng.random() < 0.85},
    )
    yield from t.facts()
