"""One administrative-penalty case, from lead to archive, as its units would publish it.

The whole story is drawn when the case starts (its timeline), then released in time order by the
scheduler. Steps follow the Administrative Penalty Law and land inside the hub's own clocks,
except for the one step a stalled case gets late or never (see `World.stall`).
"""

from __future__ import annotations

import random
from datetime import datetime, time, timedelta
from typing import Any

from connectors.simulator.case_base import CasePlan, fine_for, iso
from connectors.simulator.case_decision import DecisionSteps
from connectors.simulator.case_investigation import InvestigationSteps
from connectors.simulator.profile import Category
from connectors.simulator.scheduler import Process
from connectors.simulator.timing import CST
from connectors.simulator.world import LATE, World

__all__ = ["CasePlan", "case_process", "iso"]


def case_process(world: World, plan: CasePlan) -> Process:
    story = _Case(world, plan)
    story.tell()
    yield from story.timeline.facts()


class _Case(InvestigationSteps, DecisionSteps):
    def tell(self) -> None:
        rng, p, plan = self.rng, self.p, self.plan
        forced = plan.reconsideration is not None
        self.major = rng.random() < self.category.major
        # Its own stream: drawing the lapse shifts no other draw of this case or of the year.
        self.skips_legal_review = (
            self.major
            and self.is_office
            and not forced
            and self.w.rng("lapse", plan.subject).random() < p.rate("anomalies", "legal_review_missing")
        )
        evidence = not forced and self.chance("evidence_preserved")
        established = forced or self.chance("violation_established")
        crime = established and not forced and self.chance("suspected_crime")
        outcome = self._outcome(established, crime, forced)
        self.fine = fine_for(rng, self.category) if outcome == "penalty" else 0
        if outcome == "penalty" and not forced and rng.random() < 0.05:
            self.fine = 0  # a warning alone
        steps = ["decision", "service", "publication"]
        if not self.spreadsheet:
            steps.append("filing")
        if evidence:
            steps.append("evidence")
        if self.fine:
            steps.append("payment")
        self.stall_step, self.stall_mode = (None, None) if forced else self.w.stall(rng, steps)
        if self.stall_step == "filing" and plan.filed_day.month < 2:
            # A late January filing would need its lead before the year began: stall the decision.
            self.stall_step = "decision"
        if self.stall_step == "filing":
            self.stall_mode = LATE  # a planned filing happens; only its lateness can be drawn
        self.w.ledger.loop("case", self.stall_step, self.stall_mode)

        filed = self._lead_and_filing()
        last = filed
        if evidence:
            last = max(last, self._evidence(filed))
        assistance_rate = p.raw["case"]["assistance"].get(
            plan.category, p.raw["case"]["assistance"]["default"]
        )
        if self.is_office and rng.random() < float(assistance_rate):
            last = max(last, self._assistance(filed))
        investigated = self.days.after_cd(filed, p.span("case", "investigation_cd"), rng)
        if self.chance("decision_extended"):
            # A long investigation: the decision needs the extension of Art. 60 (see `_decide`).
            investigated = self.days.office_time(
                self.days.add_calendar(filed.date(), 70 + rng.randint(0, 10)), rng
            )
        investigated = max(investigated, self.days.office_time(last.date(), rng, after=last))
        self.add(
            investigated,
            "case.investigation_completed.v1",
            {
                "findings": "经调查，违法事实清楚" if established else "经调查，违法事实不能成立",
                "evidence_count": rng.randint(3, 25),
                "violation_established": established,
                "suspected_crime": crime,
            },
        )
        before_decision = investigated
        if crime:
            before_decision = self._criminal_transfer(investigated)
        if self.major and not self.skips_legal_review:
            before_decision = self._legal_review(before_decision)
        if outcome in ("penalty", "other"):
            before_decision = self._notice(before_decision)
        decided = self._decide(filed, before_decision, outcome)
        if decided is None:
            return
        self._after_decision(decided, outcome)

    def _outcome(self, established: bool, crime: bool, forced: bool) -> str:
        if forced:
            return "penalty"
        if not established:
            return "not_established"
        if crime:
            return "transferred_to_judicial"
        weights = self.p.weights("case", "outcomes_if_established")
        return self.rng.choices(list(weights), list(weights.values()))[0]

    # Lead, complaint, referral, filing

    def _lead_and_filing(self) -> datetime:
        rng, plan, days = self.rng, self.plan, self.days
        if self.spreadsheet:
            # The provincial export carries the filing date only: the importer files it at midnight.
            filed = datetime.combine(plan.filed_day, time(0), CST)
            self._filed(filed, publish_at=self.w.upload_after(plan.filed_day))
            return filed
        lag = rng.randint(*self.p.span("leads", "lag_wd"))
        if self.stall_step == "filing":
            lag = 15 + rng.randint(*self.p.span("stall", "late_wd"))
        lead_day = max(days.sub_working(plan.filed_day, max(lag, 1)), self.w.start.date())
        lead_at = days.office_time(lead_day, rng)
        if lead_at.date() >= plan.filed_day:
            lead_at = datetime.combine(lead_day, time(8, 0), CST) + timedelta(minutes=rng.randrange(30))
        channels = self.p.weights("leads", "channels")
        channel = rng.choices(list(channels), list(channels.values()))[0]
        referrer = self._referrer() if channel == "referral" else None
        if referrer is not None and days.sub_working(lead_day, 3) < self.w.start.date():
            referrer = None
        if channel == "referral" and referrer is None:
            channel = "patrol"
        complaint: str | None = None
        if channel == "complaint" and self.is_office:
            complaint = f"{plan.subject}-TS"
            received = max(self.w.start, lead_at - timedelta(minutes=rng.randint(30, 600)))
            self.add(
                received,
                "complaint.received.v1",
                complaint_received(plan, self.category, rng),
                subject=complaint,
            )
        if referrer is not None:
            self._referral_in(referrer, lead_at)
        self.add(
            lead_at,
            "case.lead_received.v1",
            {
                "township": plan.township,
                "category": plan.category,
                "handling_unit": self.unit,
                "lead_id": f"XS-{plan.subject}",
                "channel": channel,
                "description": f"发现涉嫌{self.category.title_zh}",
                "location": f"{self.w.directory.townships[plan.township].name_zh}辖区",
                "conduct_date": iso(lead_at),
                "referred_by_unit": referrer,
            },
        )
        filed = days.office_time(plan.filed_day, rng, after=lead_at)
        self._filed(filed)
        if complaint is not None:
            answered = days.after_wd(filed, (1, 4), rng)
            self.add(
                answered,
                "complaint.answered.v1",
                {
                    "result": "substantiated",
                    "reply": "经核查属实，已立案查处",
                    "satisfied": True,
                    "case_id": plan.subject,
                },
                subject=complaint,
            )
        if referrer is not None:
            self.add(
                days.after_wd(filed, (1, 4), rng),
                "transfer.result_reported.v1",
                {"result": "filed", "summary": "已立案调查", "case_id": plan.subject},
                subject=f"{plan.subject}-YS",
            )
        return filed

    def _filed(self, at: datetime, publish_at: datetime | None = None) -> None:
        plan = self.plan
        data: dict[str, Any] = {
            "handling_unit": self.unit,
            "requires_legal_review": self.major,
            "township": plan.township,
            "category": plan.category,
            "title": f"涉嫌{self.category.title_zh}案",
        }
        if not self.spreadsheet:
            data.update(
                case_number=f"穗番{self.short}立〔{plan.filed_day.year}〕{plan.number}号",
                lead_id=f"XS-{plan.subject}",
                party_kind=self.rng.choice(("person", "organisation", "individual_business")),
            )
        self.add(at, "case.filed.v1", data, publish_at=publish_at)

    def _referrer(self) -> str | None:
        if not self.is_office:
            return None
        township = self.plan.township
        code = self.plan.category
        if code in ("illegal_construction", "farmland_protection"):
            return self.w.planning(township)
        if code == "unlicensed_business":
            return self.w.market(township)
        return self.w.police(township)

    def _referral_in(self, referrer: str, lead_at: datetime) -> None:
        """Another unit found it and transferred it (案件移送): the lead is the accepted transfer."""
        rng, days, plan = self.rng, self.days, self.plan
        subject = f"{plan.subject}-YS"
        requested = days.office_time(days.sub_working(lead_at.date(), 2), rng)
        discovered = requested.date() - timedelta(days=rng.randint(0, 1))
        self.timeline.add(
            requested,
            referrer,
            "transfer.requested.v1",
            subject,
            {
                "to_unit": self.unit,
                "township": plan.township,
                "category": plan.category,
                "reason": "不属于本单位职权范围，依法移送",
                "urgent": False,
                "discovered_on": iso(discovered),
                "materials_count": rng.randint(1, 8),
            },
        )
        received = self.add(
            days.after_wd(requested, (0, 1), rng), "transfer.received.v1", {}, subject=subject
        )
        accepted = max(received + timedelta(minutes=5), lead_at - timedelta(minutes=10))
        self.add(
            accepted,
            "transfer.accepted.v1",
            {"receiver_case_id": plan.subject, "case_id": plan.subject},
            subject=subject,
        )
        self.w.ledger.loop("transfer", None, None)

    # Investigation


def complaint_received(plan: CasePlan, category: Category, rng: random.Random) -> dict[str, Any]:
    return {
        "channel": rng.choices(("hotline_12345", "online", "visit"), (80, 15, 5))[0],
        "township": plan.township,
        "content": f"反映{category.title_zh}问题",
        "anonymous": True,
        "ticket_number": f"12345-{plan.subject}",
        "category": plan.category,
    }
