"""A case's investigation: evidence, assistance, a suspected crime, legal review, the advance notice."""

from __future__ import annotations

from datetime import datetime, timedelta

from connectors.simulator.case_base import CaseStory, iso
from connectors.simulator.world import NEVER


class InvestigationSteps(CaseStory):
    def _evidence(self, filed: datetime) -> datetime:
        rng, days = self.rng, self.days
        preserved = days.after_wd(filed, (0, 2), rng)
        pid = f"{self.plan.subject}-BC1"
        self.add(
            preserved,
            "case.evidence_preserved.v1",
            {
                "preservation_id": pid,
                "items": "涉案物品",
                "item_count": rng.randint(1, 20),
                "approved_by": "执法机关负责人",
            },
        )
        if self.stall_step == "evidence" and self.stall_mode == NEVER:
            return preserved
        if self.stall_step == "evidence":
            disposed = days.late_after(days.deadline_wd(preserved, 7), self.p.span("stall", "late_wd"), rng)
        else:
            disposed = days.after_wd(preserved, self.p.span("case", "evidence_disposed_wd"), rng)
        self.add(
            disposed,
            "case.evidence_disposed.v1",
            {"preservation_id": pid, "disposal": rng.choice(("returned", "confiscated", "sealed_or_seized"))},
        )
        return disposed

    def _assistance(self, filed: datetime) -> datetime:
        rng, days, plan = self.rng, self.days, self.plan
        subject = f"{plan.subject}-XZ"
        if plan.category in ("illegal_construction", "farmland_protection"):
            to_unit, kind, matter = (
                self.w.planning(plan.township),
                "information_check",
                "协助核查规划许可情况",
            )
        elif plan.category == "unlicensed_business":
            to_unit, kind, matter = (
                self.w.market(plan.township),
                "information_check",
                "协助核查经营主体登记情况",
            )
        else:
            to_unit, kind, matter = (
                self.w.police(plan.township),
                "enforcement_support",
                "请求派员协助现场执法",
            )
        requested = days.after_wd(filed, (1, 5), rng)
        reply_by = days.deadline_wd(requested, 2)
        self.add(
            requested,
            "assistance.requested.v1",
            {
                "to_unit": to_unit,
                "township": plan.township,
                "kind": kind,
                "matter": matter,
                "reply_by": iso(reply_by),
                "case_id": plan.subject,
            },
            subject=subject,
        )
        step, mode = self.w.stall(rng, ["reply", "result"])
        self.w.ledger.loop("assistance", step, mode)
        if step == "reply" and mode == NEVER:
            return requested
        if step == "reply":
            replied = days.late_after(reply_by, self.p.span("stall", "late_wd"), rng)
        else:
            replied = days.after_wd(requested, (0, 2), rng)
        self.add(replied, "assistance.accepted.v1", {"case_id": plan.subject}, unit=to_unit, subject=subject)
        if step == "result" and mode == NEVER:
            return replied
        result = days.after_wd(replied, (2, 10) if step != "result" else (15, 30), rng)
        self.add(
            result,
            "assistance.result_reported.v1",
            {"summary": "已协助完成", "outcome": "completed", "case_id": plan.subject},
            unit=to_unit,
            subject=subject,
        )
        return result

    def _criminal_transfer(self, investigated: datetime) -> datetime:
        rng, days, plan = self.rng, self.days, self.plan
        subject = f"{plan.subject}-XX"
        decided = days.after_wd(investigated, (0, 1), rng)
        self.add(
            decided,
            "criminal_transfer.decided.v1",
            {
                "decision": "transfer",
                "suspected_offence": "涉嫌犯罪",
                "township": plan.township,
                "reported_on": iso(investigated),
                "case_id": plan.subject,
            },
            subject=subject,
        )
        police = self.w.police(plan.township)
        handed = self.add(
            decided + timedelta(hours=rng.randint(1, 5)),
            "criminal_transfer.handed_over.v1",
            {"police_unit": police, "materials_count": rng.randint(3, 12), "case_id": plan.subject},
            subject=subject,
        )
        self.add(
            days.after_wd(handed, (3, 20), rng),
            "criminal_transfer.police_decided.v1",
            {"decision": rng.choice(("case_filed", "case_filed", "not_filed")), "case_id": plan.subject},
            unit=police,
            subject=subject,
        )
        return handed

    def _legal_review(self, after: datetime) -> datetime:
        rng, days = self.rng, self.days
        review_id = f"{self.plan.subject}-FS"
        reviewer = self.w.judicial(self.plan.township) if self.is_office else self.unit
        requested = self.add(
            days.after_wd(after, (0, 2), rng),
            "case.legal_review_requested.v1",
            {"review_id": review_id, "reviewing_unit": reviewer, "major_case": True},
        )
        self.review_id = review_id
        return self.add(
            days.after_wd(requested, self.p.span("case", "legal_review_wd"), rng),
            "case.legal_review_completed.v1",
            {
                "review_id": review_id,
                "conclusion": rng.choices(("approved", "approved_with_changes"), (85, 15))[0],
            },
            unit=reviewer,
        )

    def _notice(self, after: datetime) -> datetime:
        rng, days = self.rng, self.days
        hearing_right = self.major or self.fine >= int(self.p.rate("case", "hearing_fine_threshold_fen"))
        notified = self.add(
            days.after_wd(after, (0, 3), rng),
            "case.advance_notice_served.v1",
            {
                "proposed_outcome": "罚款" if self.fine else "警告",
                "proposed_fine_amount_fen": self.fine or None,
                "hearing_right": hearing_right,
                "method": rng.choices(("direct", "mail", "electronic"), (85, 10, 5))[0],
                "reply_by": iso(days.deadline_wd(after, 5)),
            },
        )
        last = days.office_time(days.add_working(notified.date(), 5), rng)
        if self.chance("statement_made"):
            self.add(
                days.after_wd(notified, (0, 3), rng),
                "case.statement_made.v1",
                {
                    "form": rng.choice(("written", "oral")),
                    "adoption": rng.choices(("not_adopted", "partly_adopted", "adopted"), (70, 20, 10))[0],
                },
            )
        if hearing_right and rng.random() < self.p.rate("case", "hearing_requested_of_entitled"):
            requested = self.add(
                days.after_wd(notified, (1, 4), rng), "case.hearing_requested.v1", {"form": "written"}
            )
            scheduled = days.after_wd(requested, (1, 3), rng)
            hearing_day = days.add_working(scheduled.date(), rng.randint(8, 12))
            self.add(
                scheduled,
                "case.hearing_scheduled.v1",
                {"hearing_date": iso(hearing_day), "location": "执法办听证室"},
            )
            last = self.add(
                days.office_time(hearing_day, rng),
                "case.hearing_held.v1",
                {"host_unit": self.unit, "party_attended": rng.random() < 0.9, "summary": "听证会依法举行"},
            )
        return last

    # Decision and after
