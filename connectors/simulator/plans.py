"""The year's exact figures, fixed before anything happens: who files how many cases, on which day.

The article's totals (13,097 filings, 18 reconsiderations, 5 of them revoked or changed) are
targets, not averages: counts are split with largest remainders and days are drawn per case, so
every seed hits them exactly while the days and stories differ.
"""

from __future__ import annotations

import bisect
import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date

from connectors.simulator.cases import CasePlan
from connectors.simulator.world import World

REVOKED_OR_CHANGED = ("changed", "revoked")
OTHER_RESULTS = ("upheld", "dismissed")


def split_exactly(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """`total` split in proportion to `weights` (largest remainder), summing to `total` exactly."""
    whole = sum(weights.values())
    raw = {k: total * w / whole for k, w in weights.items()}
    counts = {k: int(v) for k, v in raw.items()}
    short = total - sum(counts.values())
    for key in sorted(raw, key=lambda k: (counts[k] - raw[k], k))[:short]:
        counts[key] += 1
    return counts


@dataclass(slots=True)
class YearPlan:
    filings: dict[date, list[CasePlan]] = field(default_factory=lambda: defaultdict(list))
    leads: dict[date, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    filed_days: dict[str, list[date]] = field(default_factory=dict)

    def cases_filed_by(self, filer: str, day: date) -> int:
        """How many cases `filer` had filed up to `day`: its case numbers 1..n exist by then."""
        return bisect.bisect_right(self.filed_days.get(filer, []), day)


def subject_prefix(filer: str) -> str:
    head, tail = filer.split(".", 1)
    return head.upper() if tail == "enforcement-office" else tail.upper()


def plan_year(world: World) -> YearPlan:
    p, rng = world.profile, world.rng("plan")
    days = world.days.working_days_in(world.year)
    day_weights = [p.monthly_weight[d.month - 1] for d in days]
    offices = {
        world.office(t): float(world.directory.units[world.office(t)].officers or 0) for t in world.townships
    }
    total = p.target("cases_filed")
    dept_counts = {unit: round(total * float(d["share"])) for unit, d in p.departments.items()}
    office_counts = split_exactly(total - sum(dept_counts.values()), offices)
    township_weights = {u.split(".", 1)[0]: w for u, w in offices.items()}
    office_categories = {c.code: c.share for c in p.categories.values()}
    plan = YearPlan()
    for filer, n in sorted({**office_counts, **dept_counts}.items()):
        is_office = filer in offices
        categories = (
            office_categories
            if is_office
            else {k: float(v) for k, v in p.departments[filer]["categories"].items()}
        )
        when = sorted(rng.choices(days, day_weights, k=n))
        plan.filed_days[filer] = when
        for number, day in enumerate(when, start=1):
            township = filer.split(".", 1)[0] if is_office else _draw(rng, township_weights)
            subject = f"{subject_prefix(filer)}-{world.year}-{number:05d}"
            plan.filings[day].append(CasePlan(subject, number, filer, township, _draw(rng, categories), day))
    _choose_reconsiderations(world, plan, rng)
    leads = split_exactly(
        round(sum(office_counts.values()) * p.rate("leads", "not_filed_per_filed")), offices
    )
    for office, n in sorted(leads.items()):
        township = office.split(".", 1)[0]
        for number, day in enumerate(sorted(rng.choices(days, day_weights, k=n)), start=1):
            plan.leads[day].append((township, f"{township.upper()}-XS{world.year}-{number:05d}"))
    return plan


def _draw(rng: random.Random, weights: Mapping[str, float]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


def _choose_reconsiderations(world: World, plan: YearPlan, rng: random.Random) -> None:
    """Early-year office cases, so that filing, decision and reconsideration all fit in the year."""
    p = world.profile
    wanted = p.target("reconsiderations")
    losses = p.target("revoked_or_changed")
    before = date(world.year, int(p.raw["targets"]["reconsideration_cases_filed_before_month"]), 1)
    candidates = sorted(
        (day, i)
        for day, cases in plan.filings.items()
        if day < before
        for i, case in enumerate(cases)
        if case.filer.endswith(".enforcement-office")
    )
    chosen = rng.sample(candidates, wanted)
    results: list[str] = [REVOKED_OR_CHANGED[i % 2] for i in range(losses)]
    results += [OTHER_RESULTS[int(i % 4 == 3)] for i in range(wanted - losses)]
    rng.shuffle(results)
    for (day, i), result in zip(sorted(chosen), results, strict=True):
        case = plan.filings[day][i]
        plan.filings[day][i] = CasePlan(
            case.subject, case.number, case.filer, case.township, case.category, case.filed_day, result
        )
