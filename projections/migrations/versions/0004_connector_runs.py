"""Runs of one-shot connectors (spreadsheet imports), so their health shows through the API.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connector_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("connector", sa.String(64), nullable=False),
        sa.Column("source_unit", sa.String(128)),
        sa.Column("input", sa.Text),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("counts", sa.Text, nullable=False),
    )
    op.create_index("ix_connector_runs_connector", "connector_runs", ["connector", "finished_at"])


def downgrade() -> None:
    op.drop_table("connector_runs")
