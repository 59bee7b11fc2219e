"""The archive chain's head as metrics, so that an outside party can anchor it (docs/audit.md).

`liandong_audit_chain_length` is the number of archived records; `liandong_audit_chain_head_info`
carries the head's hash as a label, always on exactly one series: a scraper that stores it holds a
commitment to every record up to then, which `liandong audit verify --expect-head HASH` checks later.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from projections.archive_store import ArchiveProjection, Head, read_head


@dataclass(slots=True)
class ChainHeadMetrics:
    length: Gauge
    head: Gauge
    shown: Head | None = None

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ChainHeadMetrics:
        return cls(
            length=Gauge(
                "liandong_audit_chain_length", "Records in the archive's hash chain", registry=registry
            ),
            head=Gauge(
                "liandong_audit_chain_head_info",
                "The hash of the archive chain's last record (the label); always 1",
                ["hash"],
                registry=registry,
            ),
        )

    def show(self, head: Head) -> None:
        if head == self.shown:
            return
        self.length.set(head.seq)
        # One series only: the old hash's series would otherwise stay, and two heads would show.
        self.head.clear()
        self.head.labels(hash=head.hash).set(1)
        self.shown = head

    async def after_commit(
        self, archive: ArchiveProjection | None, applied: bool, engine: AsyncEngine
    ) -> None:
        """After a batch committed: the head it wrote, or the stored head until one was shown."""
        if applied and archive is not None and archive.written is not None:
            self.show(archive.written)
        elif self.shown is None:
            async with engine.connect() as conn:
                head = await read_head(conn)
            if head is not None:
                self.show(head)
