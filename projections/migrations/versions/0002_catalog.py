"""One event log for every subject, coordination matters, anomalies and the projected directory.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "event_history",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("area", sa.String(64), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_event_history_subject_time", "event_history", ["area", "subject", "occurred_at"])
    op.execute(
        "INSERT INTO event_history (event_id, subject, area, type, source, occurred_at, topic, partition, "
        '"offset") SELECT event_id, case_id, \'case\', type, source, occurred_at, topic, partition, "offset" '
        "FROM case_events"
    )
    # The case registry's stages grew from 3 to the whole procedure; keep existing rows comparable.
    op.execute(
        "UPDATE cases SET stage_rank = CASE stage WHEN 'filed' THEN 2 WHEN 'decided' THEN 6 "
        "WHEN 'closed' THEN 9 ELSE stage_rank END"
    )
    op.drop_index("ix_case_events_case_time", table_name="case_events")
    op.drop_table("case_events")
    op.create_table(
        "matters",
        sa.Column("subject_id", sa.String(128), primary_key=True),
        sa.Column("area", sa.String(64), primary_key=True),
        sa.Column("township", sa.String(64)),
        sa.Column("case_id", sa.String(128)),
        sa.Column("initiator", sa.String(128)),
        sa.Column("opened_at", TZ),
        sa.Column("closed_at", TZ),
        sa.Column("reopened_at", TZ),
        sa.Column("last_event_at", TZ, nullable=False),
        sa.Column("last_event_type", sa.String(128), nullable=False),
        sa.Column("event_count", sa.Integer, nullable=False),
    )
    op.create_index("ix_matters_area_township", "matters", ["area", "township"])
    op.create_index("ix_matters_case", "matters", ["case_id"])
    op.create_table(
        "matter_parties",
        sa.Column("subject_id", sa.String(128), primary_key=True),
        sa.Column("area", sa.String(64), primary_key=True),
        sa.Column("unit_id", sa.String(128), primary_key=True),
    )
    op.create_index("ix_matter_parties_unit", "matter_parties", ["unit_id"])
    op.create_table(
        "anomalies",
        sa.Column("anomaly_id", sa.String(64), primary_key=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("area", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("detected_at", TZ, nullable=False),
        sa.Column("resolved_at", TZ),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_anomalies_subject", "anomalies", ["area", "subject"])
    op.create_table(
        "directory_units",
        sa.Column("unit_id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(32)),
        sa.Column("name_zh", sa.Text),
        sa.Column("name_en", sa.Text),
        sa.Column("home_township", sa.String(64)),
        sa.Column("jurisdiction", sa.Text),
        sa.Column("publishes", sa.Text),
        sa.Column("officers", sa.Integer),
        sa.Column("retired_at", TZ),
        sa.Column("changed_at", TZ, nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    for table in ("directory_units", "anomalies", "matter_parties", "matters"):
        op.drop_table(table)
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
    op.drop_table("event_history")
