"""The store's tables. Alembic migrations in `projections/migrations` create them; this is their mirror."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

hub_meta = Table(
    "hub_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

projection_checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("consumer", String(128), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, nullable=False),
    # The broker incarnation the offset belongs to: offsets from an earlier (memory-only)
    # broker say nothing about a new one.
    Column("incarnation", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

cases = Table(
    "cases",
    metadata,
    Column("case_id", String(128), primary_key=True),
    Column("township", String(64), nullable=True),
    Column("category", String(64), nullable=True),
    Column("handling_unit", String(128), nullable=True),
    Column("title", Text, nullable=True),
    Column("case_number", String(128), nullable=True),
    Column("requires_legal_review", Boolean, nullable=True),
    Column("stage", String(32), nullable=False),
    Column("stage_rank", Integer, nullable=False),
    Column("outcome", String(32), nullable=True),
    Column("fine_amount_fen", BigInteger, nullable=True),
    Column("filed_at", DateTime(timezone=True), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    Column("last_event_at", DateTime(timezone=True), nullable=False),
    Column("event_count", Integer, nullable=False),
)
Index("ix_cases_township_case", cases.c.township, cases.c.case_id)

case_events = Table(
    "case_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("case_id", String(128), nullable=False),
    Column("type", String(128), nullable=False),
    Column("source", String(128), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
)
Index("ix_case_events_case_time", case_events.c.case_id, case_events.c.occurred_at)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("unit_id", String(128), nullable=False),
    # SHA-256 of a 256-bit random secret: a slow KDF adds nothing for secrets of that entropy.
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
