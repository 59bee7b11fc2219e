"""The simulated year: `simulate_year(seed)` yields every event of Panyu's enforcement traffic.

Pure: no I/O beyond reading the profile, the directory and the calendar. Events come in publish
order, carry their simulated occurrence time, and have ids derived from the seed and the record,
so the same seed always gives the same stream, byte for byte.

    for event in simulate_year(seed=7):
        envelope = to_envelope(event)  # validated as the gateway validates
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta

from connectors.sdk import event_id_for
from connectors.simulator.cases import case_process
from connectors.simulator.leads import complaint, lead_not_filed
from connectors.simulator.matters import (
    DISTRICT_LEAD,
    consultation,
    dispute,
    file_review,
    joint_operation,
    permit,
    supervisor_report,
)
from connectors.simulator.plans import YearPlan, plan_year
from connectors.simulator.profile import SPREADSHEET, Profile
from connectors.simulator.scheduler import Fact, Process, Scheduler, Start, Wake
from connectors.simulator.simulated import SimulatedEvent
from connectors.simulator.timing import CST, Days
from connectors.simulator.world import Ledger, World
from connectors.spreadsheet.importer import record_id_for
from events.directory import Directory

# A case's lead comes at most this long before its planned filing (15 working days and a late stall).
LOOKAHEAD = timedelta(days=60)


class YearModel:
    """One simulated year. Iterate `events()` once; `ledger` then holds the stalled-loop figures."""

    def __init__(
        self,
        seed: int,
        year: int = 2022,
        *,
        profile: Profile | None = None,
        directory: Directory | None = None,
        days: Days | None = None,
    ) -> None:
        self.world = World(
            seed=seed,
            year=year,
            profile=profile or Profile.load(),
            directory=directory or Directory.load(),
            days=days or Days(),
        )
        self.plan: YearPlan = plan_year(self.world)

    @property
    def ledger(self) -> Ledger:
        return self.world.ledger

    def events(self) -> Iterator[SimulatedEvent]:
        w = self.world
        scheduler = Scheduler(w.start, w.end)
        scheduler.start(self._case_arrivals())
        scheduler.start(self._matter_arrivals())
        for publish_at, fact in scheduler.run():
            yield self._simulated(publish_at, fact)

    def _simulated(self, publish_at: datetime, fact: Fact) -> SimulatedEvent:
        channel = self.world.profile.channel_for(fact.unit, fact.type)
        if channel == SPREADSHEET:
            # The importer derives the id from the case id; the model must agree with what lands.
            record_id = record_id_for(fact.type, fact.subject)
        else:
            record_id = f"sim-{self.world.seed}|{fact.type}|{fact.subject}|{fact.key}"
        return SimulatedEvent(
            time=fact.time,
            publish_at=publish_at,
            unit=fact.unit,
            channel=channel,
            type=fact.type,
            subject=fact.subject,
            record_id=record_id,
            event_id=event_id_for(fact.unit, record_id),
            data=fact.data,
            anomaly=fact.anomaly,
        )

    def _case_arrivals(self) -> Process:
        w, plan = self.world, self.plan
        # Cases start early enough for their lead; leads that will not be filed start on their day.
        starts = [(max(w.start, _midnight(day) - LOOKAHEAD), 0, day) for day in plan.filings]
        starts += [(_midnight(day), 1, day) for day in plan.leads]
        for at, kind, day in sorted(starts):
            yield Wake(at)
            if kind == 0:
                for case in plan.filings[day]:
                    yield Start(case_process(w, case))
            else:
                for township, subject in plan.leads[day]:
                    yield Start(lead_not_filed(w, township, subject, day))

    def _matter_arrivals(self) -> Process:
        w = self.world
        p, rng = w.profile, w.rng("matters")
        working = w.days.working_days_in(w.year)
        per_day = 1 / len(working)
        officers = {t: float(w.directory.units[w.office(t)].officers or 0) for t in w.townships}
        share = {t: o / sum(officers.values()) for t, o in officers.items()}
        numbers: dict[str, int] = {}

        def next_subject(prefix: str, township: str) -> str:
            key = f"{prefix}-{township.upper()}"
            numbers[key] = numbers.get(key, 0) + 1
            return f"{key}-{w.year}-{numbers[key]:05d}"

        rate = p.rate
        months_started: set[int] = set()
        for day in working:
            yield Wake(_midnight(day))
            first_of_month = day.month not in months_started
            months_started.add(day.month)
            for township in w.townships:
                for _ in range(
                    _poisson(rng, rate("mechanisms", "standalone_complaints") * share[township] * per_day)
                ):
                    yield Start(complaint(w, township, next_subject("TS", township), day))
                for _ in range(_poisson(rng, rate("mechanisms", "permits") * share[township] * per_day)):
                    yield Start(permit(w, township, next_subject("XK", township), day))
                for _ in range(_poisson(rng, rate("mechanisms", "consultations_per_township") * per_day)):
                    yield Start(consultation(w, township, next_subject("HS", township), day))
                for _ in range(_poisson(rng, rate("mechanisms", "disputes_per_township") * per_day)):
                    yield Start(dispute(w, township, next_subject("ZY", township), day))
                for _ in range(
                    _poisson(rng, rate("mechanisms", "public_supervisor_reports_per_township") * per_day)
                ):
                    subject = next_subject("JD", township)
                    yield Start(
                        supervisor_report(w, township, subject, day, numbers[f"JD-{township.upper()}"])
                    )
                if first_of_month:
                    for _ in range(int(rate("mechanisms", "joint_operations_per_township_month"))):
                        start = w.days.add_working(day, rng.randint(0, 12))
                        yield Start(joint_operation(w, township, next_subject("LH", township), start))
            if first_of_month and day.month <= rate("mechanisms", "district_joint_operations"):
                township = rng.choice(w.townships)
                start = w.days.add_working(day, rng.randint(5, 12))
                yield Start(joint_operation(w, township, next_subject("LH", township), start, DISTRICT_LEAD))
            if _last_working_day_of_quarter(w, day):
                yield from self._file_reviews(rng, day, next_subject)

    def _file_reviews(
        self, rng: random.Random, day: date, next_subject: Callable[[str, str], str]
    ) -> Process:
        w, plan = self.world, self.plan
        for township in w.townships:
            office = w.office(township)
            closed_by = plan.cases_filed_by(office, day - timedelta(days=120))
            for _ in range(int(w.profile.rate("mechanisms", "file_reviews_per_township_quarter"))):
                case_id = None
                if closed_by:
                    number = rng.randint(1, closed_by)
                    case_id = f"{township.upper()}-{w.year}-{number:05d}"
                yield Start(file_review(w, township, next_subject("PC", township), day, case_id))


def simulate_year(seed: int, year: int = 2022) -> Iterator[SimulatedEvent]:
    """Every event of one simulated year of Panyu's enforcement traffic, in publish order."""
    return YearModel(seed, year).events()


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), CST)


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the small daily means used here."""
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _last_working_day_of_quarter(world: World, day: date) -> bool:
    if day.month not in (3, 6, 9, 12):
        return False
    if day.month == 12:
        # The year's last review comes before the holidays, so that it lands within the year.
        return day == world.days.on_or_after(date(day.year, 12, 15))
    nxt = day + timedelta(days=1)
    while not world.days.is_working(nxt):
        nxt += timedelta(days=1)
    return nxt.month != day.month
