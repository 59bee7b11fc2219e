"""The archive chain's head, for auditors and the supervision section to anchor (docs/audit.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import select

from projections.archive import GENESIS
from projections.archive_store import CHAIN
from projections.schema import archive_head
from services.api.access import Viewer, require
from services.api.context import Ctx
from services.api.listing import PROBLEMS
from services.api.models import AuditHead
from services.api.render import iso

router = APIRouter()
AuditorDep = Annotated[Viewer, Depends(require("district", "auditor"))]


@router.get("/v1/audit/head", response_model=AuditHead, responses=PROBLEMS)
async def audit_head(ctx: Ctx, _viewer: AuditorDep) -> AuditHead:
    """The last record's seq and hash: `liandong audit verify --expect-head HASH` later proves that
    every record up to it is unchanged."""
    h = archive_head.c
    async with ctx.engine.connect() as conn:
        row = (await conn.execute(select(h.seq, h.hash, h.updated_at).where(h.chain == CHAIN))).first()
    if row is None:
        return AuditHead(seq=0, hash=GENESIS, updated_at=None)
    return AuditHead(seq=row.seq, hash=row.hash, updated_at=iso(row.updated_at))
