"""Hub metadata, checkpoints, the case registry and API keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "hub_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "projection_checkpoints",
        sa.Column("consumer", sa.String(128), primary_key=True),
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("incarnation", sa.String(64), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "cases",
        sa.Column("case_id", sa.String(128), primary_key=True),
        sa.Column("township", sa.String(64)),
        sa.Column("category", sa.String(64)),
        sa.Column("handling_unit", sa.String(128)),
        sa.Column("title", sa.Text),
        sa.Column("case_number", sa.String(128)),
        sa.Column("requires_legal_review", sa.Boolean),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("stage_rank", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(32)),
        sa.Column("fine_amount_fen", sa.BigInteger),
        sa.Column("filed_at", TZ),
        sa.Column("decided_at", TZ),
        sa.Column("closed_at", TZ),
        sa.Column("last_event_at", TZ, nullable=False),
        sa.Column("event_count", sa.Integer, nullable=False),
    )
    op.create_index("ix_cases_township_case", "cases", ["township", "case_id"])
    op.create_table(
        "case_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("case_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_case_events_case_time", "case_events", ["case_id", "occurred_at"])
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("unit_id", sa.String(128), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("revoked_at", TZ),
    )


def downgrade() -> None:
    for table in ("api_keys", "case_events", "cases", "projection_checkpoints", "hub_meta"):
        op.drop_table(table)
