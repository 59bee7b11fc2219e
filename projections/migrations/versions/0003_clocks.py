"""Clocks, alerts with their recipients, and webhook deliveries.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "clocks",
        sa.Column("clock_id", sa.String(64), primary_key=True),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("rule_version", sa.Integer, nullable=False),
        sa.Column("area", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("party", sa.String(128), nullable=False),
        sa.Column("responsible", sa.String(128)),
        sa.Column("township", sa.String(64)),
        sa.Column("case_id", sa.String(128)),
        sa.Column("started_at", TZ),
        sa.Column("start_deadline", sa.Date),
        sa.Column("reset_at", TZ),
        sa.Column("reset_deadline", sa.Date),
        sa.Column("stopped_at", TZ),
        sa.Column("extended_to", sa.Date),
        sa.Column("paused_at", TZ),
        sa.Column("resumed_at", TZ),
        sa.Column("measured_from", sa.Date),
        sa.Column("measured_date", sa.Date),
        sa.Column("acknowledged_at", TZ),
        sa.Column("fired", sa.Text, nullable=False),
        sa.Column("withdrawn", sa.Text, nullable=False),
        sa.Column("deadline", TZ),
        sa.Column("provisional", sa.Boolean, nullable=False),
        sa.Column("calendar_version", sa.String(64), nullable=False),
        sa.Column("next_check_at", TZ),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_index("ix_clocks_next_check", "clocks", ["next_check_at"])
    op.create_index("ix_clocks_subject", "clocks", ["area", "subject"])
    # Only provisional deadlines are ever recomputed; keep that lookup off a full scan.
    provisional = sa.text("provisional")
    op.create_index(
        "ix_clocks_provisional",
        "clocks",
        ["calendar_version"],
        postgresql_where=provisional,
        sqlite_where=provisional,
    )
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("clock_id", sa.String(64), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("rule_name_zh", sa.Text, nullable=False),
        sa.Column("rule_name_en", sa.Text, nullable=False),
        sa.Column("citation", sa.Text, nullable=False),
        sa.Column("level", sa.String(32), nullable=False),
        sa.Column("about_area", sa.String(64), nullable=False),
        sa.Column("about_subject", sa.String(128), nullable=False),
        sa.Column("responsible_unit", sa.String(128)),
        sa.Column("township", sa.String(64)),
        sa.Column("case_id", sa.String(128)),
        sa.Column("deadline", TZ, nullable=False),
        sa.Column("threshold", TZ, nullable=False),
        sa.Column("overdue_seconds", sa.BigInteger, nullable=False),
        sa.Column("provisional", sa.Boolean, nullable=False),
        sa.Column("proposed_order", sa.Text),
        sa.Column("raised_at", TZ, nullable=False),
        sa.Column("withdrawn_at", TZ),
        sa.Column("acknowledged_at", TZ),
        sa.Column("acknowledged_by", sa.String(128)),
    )
    op.create_index("ix_alerts_clock", "alerts", ["clock_id"])
    op.create_table(
        "alert_recipients",
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("unit_id", sa.String(128), primary_key=True),
    )
    op.create_index("ix_alert_recipients_unit", "alert_recipients", ["unit_id"])
    op.create_table(
        "deliveries",
        sa.Column("delivery_id", sa.String(64), primary_key=True),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("unit_id", sa.String(128), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TZ),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("delivered_at", TZ),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])


def downgrade() -> None:
    for table in ("deliveries", "alert_recipients", "alerts", "clocks"):
        op.drop_table(table)
