"""A case's decision and what follows: service, publication, sharing, payment, closure, appeals."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from connectors.simulator.case_base import CaseStory, iso
from connectors.simulator.simulated import LEGAL_REVIEW_MISSING
from connectors.simulator.world import NEVER

PUBLICATION_PLATFORM = "广东省行政执法信息公示平台"
RECONSIDERATION_BODY = "广州市番禺区人民政府"


class DecisionSteps(CaseStory):
    def _decide(self, filed: datetime, earliest: datetime, outcome: str) -> datetime | None:
        rng, days = self.rng, self.days
        deadline = days.deadline_cd(filed, 90)
        if self.stall_step == "decision" and self.stall_mode == NEVER:
            return None
        if self.stall_step == "decision":
            decided = max(
                days.late_after(deadline, self.p.span("stall", "late_wd"), rng),
                days.after_wd(earliest, (1, 3), rng),
            )
        else:
            window_end = deadline - timedelta(days=3)
            if earliest.date() >= window_end:
                extended = self.add(
                    days.office_time(min(earliest.date(), deadline - timedelta(days=1)), rng, after=filed),
                    "case.decision_deadline_extended.v1",
                    {
                        "approved_by": "执法机关负责人",
                        "rule": "《行政处罚法》第60条；经负责人批准延长30日",
                        "extended_by_days": 30,
                        "new_deadline": iso(deadline + timedelta(days=30)),
                    },
                )
                earliest = max(earliest, extended)
                window_end = deadline + timedelta(days=26)
            spread = max(1, min(20, (window_end - earliest.date()).days))
            decided = days.office_time(
                earliest.date() + timedelta(days=rng.randint(1, spread)), rng, after=earliest
            )
        penalties: list[dict[str, Any]] = []
        if outcome == "penalty":
            penalties.append({"kind": "fine", "amount_fen": self.fine} if self.fine else {"kind": "warning"})
        self.decision_number = f"穗番{self.short}罚决〔{self.plan.filed_day.year}〕{self.plan.number}号"
        data: dict[str, Any] = {
            "outcome": outcome,
            "penalties": penalties,
            "decision_number": self.decision_number,
            "major_case": self.major,
        }
        if self.major and not self.skips_legal_review:
            data["legal_review_id"] = self.review_id
        lapse = LEGAL_REVIEW_MISSING if self.skips_legal_review else None
        return self.add(decided, "case.decided.v2", data, anomaly=lapse)

    def _after_decision(self, decided: datetime, outcome: str) -> None:
        rng, days, p, plan = self.rng, self.days, self.p, self.plan
        published = self._publish(decided, outcome)
        if self.major and outcome == "penalty":
            self._share_major_penalty(decided)
        if self.stall_step == "service" and self.stall_mode == NEVER:
            return
        if self.stall_step == "service":
            served = days.late_after(days.deadline_wd(decided, 7), p.span("stall", "late_wd"), rng)
        else:
            served = days.after_wd(decided, p.span("case", "service_wd"), rng)
        absent = self.chance("party_absent")
        self.add(
            served,
            "case.decision_served.v1",
            {
                "method": "mail" if absent else "direct",
                "party_absent": absent,
                "document_number": self.decision_number,
            },
        )
        executed = self._execute(served)
        if plan.reconsideration is not None and published is not None:
            self._reconsideration(served, published)
        elif outcome == "penalty" and self.chance("lawsuit"):
            self._lawsuit(served)
        if executed is None:
            return
        closed = self.add(
            days.after_wd(executed, p.span("case", "close_wd"), rng),
            "case.closed.v1",
            {"closure_reason": "执行完毕" if self.fine else "结案"},
        )
        self.add(
            days.after_cd(closed, p.span("case", "archive_cd"), rng),
            "case.archived.v1",
            {
                "archive_number": f"GD-{plan.subject}",
                "retention_years": None if self.major else 30,
                "retention_permanent": self.major,
            },
        )

    def _publish(self, decided: datetime, outcome: str) -> datetime | None:
        rng, days, p = self.rng, self.days, self.p
        penalty = outcome == "penalty"
        limit = 7 if penalty else 20
        if self.stall_step == "publication" and self.stall_mode == NEVER:
            return None
        if self.stall_step == "publication":
            at = days.late_after(days.deadline_wd(decided, limit), p.span("stall", "late_wd"), rng)
        else:
            at = days.after_wd(
                decided, p.span("case", "publication_wd" if penalty else "publication_other_wd"), rng
            )
        self.publication_id = f"GS-{self.plan.subject}"
        return self.add(
            at,
            "case.published.v1",
            {
                "publication_id": self.publication_id,
                "kind": "penalty_decision" if penalty else "other_enforcement_decision",
                "platform": PUBLICATION_PLATFORM,
                "personal_data_masked": True,
            },
        )

    def _share_major_penalty(self, decided: datetime) -> None:
        rng, days, plan = self.rng, self.days, self.plan
        department = self.category.department
        if department == self.unit:
            return
        subject = f"{plan.subject}-GX"
        sent = self.add(
            days.after_wd(decided, self.p.span("case", "major_penalty_notice_wd"), rng),
            "info_sharing.notice_sent.v1",
            {
                "to_units": [department],
                "township": plan.township,
                "kind": "major_penalty",
                "reference": self.decision_number,
                "summary": f"重大行政处罚决定：涉嫌{self.category.title_zh}案",
                "decided_on": iso(decided),
                "case_id": plan.subject,
            },
            subject=subject,
        )
        self.add(
            days.after_wd(sent, (0, 2), rng),
            "info_sharing.notice_acknowledged.v1",
            {"unit": department, "case_id": plan.subject},
            unit=department,
            subject=subject,
        )

    def _execute(self, served: datetime) -> datetime | None:
        rng, days, p = self.rng, self.days, self.p
        if not self.fine:
            return self.add(
                days.after_wd(served, (1, 8), rng), "case.executed.v1", {"execution": "performed"}
            )
        if self.stall_step != "payment":
            return self.add(
                days.after_cd(served, p.span("case", "payment_cd"), rng),
                "case.executed.v1",
                {"execution": "paid", "amount_paid_fen": self.fine},
            )
        due = days.deadline_cd(served, 15)
        assessed = days.late_after(due, (1, 5), rng)
        days_late = (assessed.date() - due).days
        late_fee = min(self.fine, self.fine * 3 * days_late // 100)
        self.add(
            assessed,
            "case.late_fee_assessed.v1",
            {"days_late": days_late, "late_fee_fen": late_fee, "fine_amount_fen": self.fine},
        )
        if self.stall_mode == NEVER:
            if self.chance("court_enforcement_of_late"):
                self.add(
                    days.after_cd(served, (200, 240), rng),
                    "case.court_enforcement_applied.v1",
                    {"court": "广州市番禺区人民法院", "amount_claimed_fen": self.fine + late_fee},
                )
            return None
        paid = days.late_after(due, p.span("stall", "late_wd"), rng)
        paid = max(paid, days.office_time(assessed.date(), rng, after=assessed))
        days_paid_late = (paid.date() - due).days
        return self.add(
            paid,
            "case.executed.v1",
            {
                "execution": "paid",
                "amount_paid_fen": self.fine,
                "late_fee_paid_fen": min(self.fine, self.fine * 3 * days_paid_late // 100),
            },
        )

    def _reconsideration(self, served: datetime, published: datetime) -> None:
        rng, days, plan = self.rng, self.days, self.plan
        result = plan.reconsideration or "upheld"
        rid = f"FY-{plan.subject}"
        filed = self.add(
            days.after_cd(served, (10, 50), rng),
            "case.reconsideration_filed.v1",
            {"reconsideration_id": rid, "body": RECONSIDERATION_BODY, "applicant_name": "复议申请人"},
        )
        decided = self.add(
            days.after_cd(filed, (30, 55), rng),
            "case.reconsideration_decided.v1",
            {
                "reconsideration_id": rid,
                "result": result,
                "decision_number": f"番府复〔{plan.filed_day.year}〕{plan.number}号",
            },
        )
        if result in ("revoked", "changed"):
            self.add(
                days.after_wd(max(decided, published), (1, 2), rng),
                "case.publication_withdrawn.v1",
                {
                    "publication_id": self.publication_id,
                    "reason": result,
                    "detail": "复议机关撤销或变更原处罚决定",
                },
            )

    def _lawsuit(self, served: datetime) -> None:
        rng, days, plan = self.rng, self.days, self.plan
        lawsuit = f"SS-{plan.subject}"
        sued = self.add(
            days.after_cd(served, (30, 150), rng),
            "case.lawsuit_filed.v1",
            {"lawsuit_id": lawsuit, "court": "广州市番禺区人民法院", "plaintiff_name": "原告"},
        )
        self.add(
            days.after_cd(sued, (60, 120), rng),
            "case.lawsuit_judged.v1",
            {"lawsuit_id": lawsuit, "instance": "first", "result": rng.choice(("upheld", "dismissed"))},
        )
