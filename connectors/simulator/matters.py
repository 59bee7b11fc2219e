"""The coordination mechanisms that are not part of one case: joint operations, consultations,
disputes, permits and their linkage, public supervisors' reports and case-file reviews.

Each function draws one matter's whole story (a `Timeline`) and releases it in time order. Only
consultations have a duty clock among them, so only they count in the stall ledger.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta

from connectors.simulator.cases import iso
from connectors.simulator.leads import OTHER_AGENCIES, pick
from connectors.simulator.scheduler import Process
from connectors.simulator.simulated import REPEAT_INSPECTION
from connectors.simulator.timing import CST
from connectors.simulator.world import NEVER, Timeline, World

DISTRICT_LEAD = "district.urban-management"
SUPERVISOR = "district.justice-bureau"


def _credit_code(rng: random.Random) -> str:
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    return "92440113" + "".join(rng.choice(alphabet) for _ in range(10))


def joint_operation(world: World, township: str, subject: str, day: date, lead: str | None = None) -> Process:
    """A monthly joint operation (联合执法) of the office, the police station and market supervision."""
    rng, days = world.rng("joint", subject), world.days
    office = world.office(township)
    lead = lead or office
    units = [lead, *(u for u in (office, world.police(township), world.market(township)) if u != lead)][:3]
    t = Timeline()
    planned = days.office_time(day, rng)
    held_day = days.add_working(day, rng.randint(3, 10))
    theme = rng.choice(("夜市占道经营专项整治", "违法建设巡查", "餐饮油烟专项检查", "建筑垃圾运输整治"))
    t.add(
        planned,
        lead,
        "joint_operation.planned.v1",
        subject,
        {"units": units, "township": township, "theme": theme, "planned_date": iso(held_day)},
    )
    for unit in units[1:]:
        t.add(
            days.after_wd(planned, (0, 2), rng),
            unit,
            "joint_operation.unit_joined.v1",
            subject,
            {"unit": unit, "officers": rng.randint(2, 8)},
            key=unit,
        )
    held = t.add(
        days.office_time(held_day, rng),
        lead,
        "joint_operation.held.v1",
        subject,
        {
            "held_on": iso(held_day),
            "participants": rng.randint(10, 40),
            "units_present": units,
            "places_inspected": rng.randint(5, 60),
        },
    )
    for unit in units:
        t.add(
            days.after_wd(held, (0, 3), rng),
            unit,
            "joint_operation.finding_reported.v1",
            subject,
            {"unit": unit, "findings": "检查发现问题已督促整改", "cases_opened": rng.randint(0, 4)},
            key=unit,
        )
    yield from t.facts()


def consultation(world: World, township: str, subject: str, day: date) -> Process:
    """A coordination consultation (协调会商): accepted, every consulted unit replies, then an opinion."""
    rng, days, p = world.rng("consultation", subject), world.days, world.profile
    office = world.office(township)
    candidates = [
        world.police(township),
        world.market(township),
        world.planning(township),
        world.judicial(township),
    ]
    consulted = rng.sample(candidates, rng.randint(2, 3))
    t = Timeline()
    at = days.office_time(day, rng)
    requested = t.add(
        at,
        office,
        "consultation.requested.v1",
        subject,
        {
            "consulted_units": consulted,
            "township": township,
            "topic": rng.choice(("违法建设认定分工", "占道经营管控职责", "油烟扰民联合处置")),
            "reply_by": iso(days.deadline_wd(at, 5)),
            "convening_unit": office,
        },
    )
    step, mode = world.stall(rng, ["acceptance", "opinion"])
    world.ledger.loop("consultation", step, mode)
    late = p.span("stall", "late_wd")
    if step == "acceptance" and mode == NEVER:
        yield from t.facts()
        return
    if step == "acceptance":
        accepted = days.late_after(days.deadline_wd(requested, 5), late, rng)
    else:
        accepted = days.after_wd(requested, (0, 3), rng)
    t.add(accepted, office, "consultation.accepted.v1", subject, {"mode": "meeting"})
    last = accepted
    laggard = rng.choice(consulted)
    for unit in consulted:
        if step == "opinion" and unit == laggard:
            if mode == NEVER:
                continue
            at = days.late_after(days.deadline_wd(requested, 5), late, rng)
        else:
            at = days.after_wd(requested, (1, 5), rng)
        last = max(
            last,
            t.add(
                at,
                unit,
                "consultation.opinion_received.v1",
                subject,
                {"unit": unit, "opinion": "同意"},
                key=unit,
            ),
        )
    if step == "opinion" and mode == NEVER:
        yield from t.facts()
        return
    issuer = SUPERVISOR if rng.random() < 0.15 else office
    t.add(
        days.after_wd(last, (2, 8), rng),
        issuer,
        "consultation.opinion_issued.v1",
        subject,
        {
            "opinion": "明确由牵头单位负责处置，相关单位配合",
            "responsible_unit": rng.choice([office, *consulted]),
        },
    )
    yield from t.facts()


def dispute(world: World, township: str, subject: str, day: date) -> Process:
    """A responsibility dispute (职责争议) settled by the district's supervision section."""
    rng, days = world.rng("dispute", subject), world.days
    office = world.office(township)
    other = rng.choice(
        [world.market(township), world.planning(township), world.police(township), *OTHER_AGENCIES]
    )
    t = Timeline()
    raised = t.add(
        days.office_time(day, rng),
        office,
        "dispute.raised.v1",
        subject,
        {"units": [office, other], "township": township, "matter": "监管职责边界不清"},
    )
    referred = t.add(
        days.after_wd(raised, (3, 10), rng),
        SUPERVISOR,
        "dispute.referred.v1",
        subject,
        {"referred_to": SUPERVISOR},
    )
    decided = t.add(
        days.after_wd(referred, (10, 30), rng),
        SUPERVISOR,
        "dispute.decided.v1",
        subject,
        {
            "responsible_unit": rng.choice((office, other)),
            "basis": "《番禺区镇街综合行政执法事项职责边界清单》",
        },
    )
    t.add(
        days.after_wd(decided, (0, 10), rng),
        SUPERVISOR,
        "dispute.listed.v1",
        subject,
        {"list_entry_id": f"QD-{subject}", "matter_category": "职责边界"},
    )
    yield from t.facts()


def permit(world: World, township: str, subject: str, day: date) -> Process:
    """Approval-supervision-enforcement linkage: a permit is shared with the office, some inspected."""
    rng, days, p = world.rng("permit", subject), world.days, world.profile
    office = world.office(township)
    food = rng.random() < 0.7
    issuer = world.market(township) if food else world.planning(township)
    business = (
        f"番禺{world.directory.townships[township].name_zh}某{'餐饮店' if food else '建设项目'}{subject[-5:]}"
    )
    code = _credit_code(rng)
    t = Timeline()
    granted = t.add(
        days.office_time(day, rng),
        issuer,
        "linkage.permit_granted.v1",
        subject,
        {
            "permit_number": f"{'JY' if food else 'JZ'}{subject[-9:]}",
            "permit_kind": "食品经营许可证" if food else "建设工程规划许可证",
            "business_name": business,
            "business_credit_code": code,
            "township": township,
            "valid_until": iso(day + timedelta(days=5 * 365)),
            "supervising_unit": issuer,
        },
    )
    notice = f"{subject}-GX"
    sent = t.add(
        days.after_wd(granted, (0, 1), rng),
        issuer,
        "info_sharing.notice_sent.v1",
        notice,
        {
            "to_units": [office],
            "township": township,
            "kind": "permit",
            "reference": f"XK-{subject}",
            "summary": "许可信息推送",
            "decided_on": iso(granted),
            "business_name": business,
            "business_credit_code": code,
        },
    )
    t.add(
        days.after_wd(sent, (0, 2), rng),
        office,
        "info_sharing.notice_acknowledged.v1",
        notice,
        {"unit": office},
    )
    if rng.random() < p.rate("mechanisms", "permit_inspection"):
        tasked_at = days.after_cd(granted, (10, 40), rng)
        own = _own_inspection(world, granted, tasked_at, subject)
        tasked = t.add(
            tasked_at,
            issuer,
            "linkage.inspection_tasked.v1",
            subject,
            {
                "inspecting_unit": office,
                "township": township,
                "due": iso(days.deadline_wd(tasked_at, 20)),
                "permit_id": subject,
                "business_name": business,
                "business_credit_code": code,
            },
            anomaly=REPEAT_INSPECTION if own is not None and own[0] < tasked_at else None,
        )
        if own is not None:
            _inspect_again(world, t, own, issuer, township, subject, business, code, tasked_at)
        finding = pick(rng, {"compliant": 0.8, "rectification_ordered": 0.15, "violation_found": 0.05})
        done = t.add(
            days.after_wd(tasked, (3, 15), rng),
            office,
            "linkage.inspection_completed.v1",
            subject,
            {"finding": finding, "detail": "按许可事项开展检查"},
        )
        if finding == "violation_found":
            t.add(
                days.after_wd(done, (0, 2), rng),
                issuer,
                "linkage.lead_referred.v1",
                subject,
                {
                    "to_unit": office,
                    "township": township,
                    "summary": "检查发现违法线索",
                    "business_name": business,
                },
            )
    yield from t.facts()


def _own_inspection(
    world: World, granted: datetime, tasked_at: datetime, subject: str
) -> tuple[datetime, random.Random] | None:
    """When the permit's issuer also inspects the business itself, a few working days before or
    after the office's inspection (an injected repeat inspection); None for most permits.

    Drawn from the permit's own "repeat" stream, so that the permit's other draws stay as they were.
    """
    rng, days, p = world.rng("repeat", subject), world.days, world.profile
    if rng.random() >= p.rate("anomalies", "repeat_inspection"):
        return None
    gap = rng.randint(*p.span("anomalies", "repeat_gap_wd"))
    office_day = tasked_at.astimezone(CST).date()
    day = days.sub_working(office_day, gap)
    if rng.random() < 0.5 or day <= granted.astimezone(CST).date():
        day = days.add_working(office_day, gap)  # after the office's, or before it is impossible
    return days.office_time(day, rng), rng


def _inspect_again(
    world: World,
    t: Timeline,
    own: tuple[datetime, random.Random],
    issuer: str,
    township: str,
    subject: str,
    business: str,
    code: str,
    office_tasked: datetime,
) -> None:
    """The issuer's own spot check (双随机抽查) of the business, under a task id of its own."""
    at, rng = own
    task = f"{subject}-JC"
    tasked = t.add(
        at,
        issuer,
        "linkage.inspection_tasked.v1",
        task,
        {
            "inspecting_unit": issuer,
            "township": township,
            "due": iso(world.days.deadline_wd(at, 20)),
            "permit_id": subject,
            "scope": "“双随机、一公开”抽查",
            "business_name": business,
            "business_credit_code": code,
        },
        anomaly=REPEAT_INSPECTION if at > office_tasked else None,
    )
    t.add(
        world.days.after_wd(tasked, (1, 5), rng),
        issuer,
        "linkage.inspection_completed.v1",
        task,
        {
            "finding": pick(rng, {"compliant": 0.85, "rectification_ordered": 0.15}),
            "detail": "按年度抽查计划开展检查",
        },
    )


def supervisor_report(world: World, township: str, subject: str, day: date, number: int) -> Process:
    """A public supervisor's report (社会监督员), answered by the township's judicial office."""
    rng, days = world.rng("supervisor", subject), world.days
    t = Timeline()
    filed = t.add(
        days.office_time(day, rng),
        SUPERVISOR,
        "public_supervisor.report_filed.v1",
        subject,
        {
            "supervisor_name": f"社会监督员{number % 40 + 1:02d}号",
            "township": township,
            "about_unit": world.office(township),
            "content": "执法过程中文明执法情况反映",
            "method": rng.choice(("open_inspection", "incognito_visit", "on_site")),
            "supervisor_role": rng.choice(
                ("npc_deputy", "cppcc_member", "resident_representative", "lawyer")
            ),
        },
    )
    t.add(
        days.after_wd(filed, (5, 15), rng),
        world.judicial(township),
        "public_supervisor.report_answered.v1",
        subject,
        {
            "reply": "已核实并反馈",
            "result": pick(rng, {"substantiated": 0.3, "unsubstantiated": 0.6, "referred": 0.1}),
        },
    )
    yield from t.facts()


def file_review(world: World, township: str, subject: str, day: date, case_id: str | None) -> Process:
    """A case-file review (案卷评查) of one closed case by the supervision section."""
    rng = world.rng("review", subject)
    score = rng.randint(72, 99)
    t = Timeline()
    t.add(
        world.days.office_time(day, rng),
        SUPERVISOR,
        "file_review.scored.v1",
        subject,
        {
            "reviewed_unit": world.office(township),
            "township": township,
            "score": score,
            "passed": score >= 80,
            "reviewing_body": "区司法局",
            "review_batch": f"{day.year}Q{(day.month - 1) // 3 + 1}",
            "case_id": case_id,
        },
    )
    yield from t.facts()
