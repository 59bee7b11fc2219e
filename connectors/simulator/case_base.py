"""What every step of a case shares: its plan, its random draws, its timeline, what is decided so far.

The steps themselves live in `case_investigation`, `case_decision` and `cases`; each is a mixin
over `CaseStory`, so that a case reads as one story across small modules.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from connectors.simulator.profile import SPREADSHEET, Category
from connectors.simulator.timing import CST
from connectors.simulator.world import Timeline, World


@dataclass(frozen=True, slots=True)
class CasePlan:
    subject: str
    number: int
    filer: str
    township: str
    category: str
    filed_day: date
    reconsideration: str | None = None  # the result its reconsideration will have, if it gets one


def iso(day: date | datetime) -> str:
    return (day.astimezone(CST).date() if isinstance(day, datetime) else day).isoformat()


def fine_for(rng: random.Random, category: Category) -> int:
    """A round fine in the category's range, skewed to the low end as most fines are."""
    low, high = category.fine_fen
    amount = low * (high / low) ** (rng.random() ** 2)
    step = 10_000 if amount >= 100_000 else 1_000
    return max(low, int(round(amount / step) * step))


class CaseStory:
    """The state every step reads; the decisions drawn up front are set by `cases._Case.tell`."""

    def __init__(self, world: World, plan: CasePlan) -> None:
        self.w, self.plan = world, plan
        self.p = world.profile
        self.days = world.days
        self.rng = world.rng("case", plan.subject)
        self.timeline = Timeline()
        self.unit = plan.filer
        self.category = self.p.categories[plan.category]
        self.spreadsheet = self.p.channel_for(plan.filer, "case.filed.v1") == SPREADSHEET
        self.is_office = plan.filer.endswith(".enforcement-office")
        if self.is_office:
            self.short = (
                world.directory.townships[plan.township].name_zh.removesuffix("街道").removesuffix("镇")
            )
        else:
            self.short = world.directory.units[plan.filer].name_zh[1:3]
        self.major = False
        self.skips_legal_review = False  # an injected lapse: a major case decided without review
        self.fine = 0
        self.stall_step: str | None = None
        self.stall_mode: str | None = None
        self.review_id = ""
        self.decision_number = ""
        self.publication_id = ""

    def add(self, at: datetime, short_type: str, data: dict[str, Any], **kw: Any) -> datetime:
        unit = kw.pop("unit", self.unit)
        subject = kw.pop("subject", self.plan.subject)
        return self.timeline.add(at, unit, short_type, subject, data, **kw)

    def chance(self, key: str) -> bool:
        return self.rng.random() < self.p.rate("case", key)
