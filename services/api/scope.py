"""May this unit speak about this subject? For events that do not name their township.

A unit may publish about a subject in a township it covers, or about a matter it takes part in
(the receiver of a transfer in another township, the handling unit of a case). A subject the hub
has not seen yet is allowed: the fact is kept, and anomalies flag what is out of order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from connectors.http_gateway.ingest import FieldProblem, township_fields
from events.catalog import Catalog
from events.directory import Directory
from events.envelope import Envelope
from projections.db import pairs_in
from projections.schema import cases, matter_parties, matters


async def out_of_scope(
    engine: AsyncEngine, catalog: Catalog, directory: Directory, events: Sequence[Envelope], batch: bool
) -> list[FieldProblem]:
    pending = [(i, e) for i, e in enumerate(events) if not township_fields(catalog.get(e.type).latest)]
    if not pending:
        return []
    townships: dict[tuple[str, str], str | None] = {}
    parties: dict[tuple[str, str], set[str]] = defaultdict(set)
    case_ids = {e.subject for _, e in pending if e.area == "case"}
    others = {(e.area, e.subject) for _, e in pending if e.area != "case"}
    async with engine.connect() as conn:
        if case_ids:
            rows = await conn.execute(
                select(cases.c.case_id, cases.c.township, cases.c.handling_unit).where(
                    cases.c.case_id.in_(case_ids)
                )
            )
            for row in rows:
                townships[("case", row.case_id)] = row.township
                if row.handling_unit:
                    parties[("case", row.case_id)].add(row.handling_unit)
        if others:
            m, mp = matters.c, matter_parties.c
            match = pairs_in(m.area, m.subject_id, others)
            for row in await conn.execute(select(m.area, m.subject_id, m.township).where(match)):
                townships[(row.area, row.subject_id)] = row.township
            match_p = pairs_in(mp.area, mp.subject_id, others)
            for row in await conn.execute(select(mp.area, mp.subject_id, mp.unit_id).where(match_p)):
                parties[(row.area, row.subject_id)].add(row.unit_id)
    problems: list[FieldProblem] = []
    for i, event in pending:
        key = (event.area, event.subject)
        township = townships.get(key)
        unit = directory.units[event.source]
        if township is None or unit.covers(township) or event.source in parties[key]:
            continue
        problems.append(
            FieldProblem(
                "subject",
                f"'{event.subject}' is a matter of township '{township}', which unit '{event.source}' "
                "does not cover and in which it takes no part",
                i if batch else None,
            )
        )
    return problems
