"""Alembic environment. Liandong runs migrations through `projections.migrate`, which hands in a
connection from its async engine; the standalone `alembic` CLI is not needed."""

from __future__ import annotations

from alembic import context

from projections.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `liandong migrate` (projections.migrate.upgrade)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
