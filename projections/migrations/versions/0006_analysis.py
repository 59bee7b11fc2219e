"""Analysis (分析研判): file reviews, the dispute list, inspections, and announced anomalies.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("anomalies") as batch:
        batch.add_column(sa.Column("township", sa.String(64)))
        batch.add_column(sa.Column("announced_at", TZ))
    op.create_index("ix_anomalies_announced", "anomalies", ["announced_at"])
    op.create_table(
        "file_reviews",
        sa.Column("review_id", sa.String(128), primary_key=True),
        sa.Column("reviewed_unit", sa.String(128), nullable=False),
        sa.Column("township", sa.String(64)),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("reviewing_body", sa.Text),
        sa.Column("review_batch", sa.String(128)),
        sa.Column("case_id", sa.String(128)),
        sa.Column("case_number", sa.String(128)),
        sa.Column("problems", sa.Integer, nullable=False),
        sa.Column("scored_at", TZ, nullable=False),
    )
    op.create_index("ix_file_reviews_township", "file_reviews", ["township", "scored_at"])
    op.create_table(
        "disputes",
        sa.Column("dispute_id", sa.String(128), primary_key=True),
        sa.Column("township", sa.String(64)),
        sa.Column("matter", sa.Text),
        sa.Column("units", sa.Text),
        sa.Column("case_id", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("raised_at", TZ),
        sa.Column("referred_to", sa.String(128)),
        sa.Column("referred_at", TZ),
        sa.Column("responsible_unit", sa.String(128)),
        sa.Column("basis", sa.Text),
        sa.Column("decided_at", TZ),
        sa.Column("list_entry_id", sa.String(128)),
        sa.Column("matter_category", sa.String(64)),
        sa.Column("listed_at", TZ),
        sa.Column("last_event_at", TZ, nullable=False),
    )
    op.create_index("ix_disputes_township", "disputes", ["township", "dispute_id"])
    op.create_table(
        "inspections",
        sa.Column("subject", sa.String(128), primary_key=True),
        sa.Column("inspecting_unit", sa.String(128)),
        sa.Column("township", sa.String(64)),
        sa.Column("business_key", sa.String(160)),
        sa.Column("business_name", sa.Text),
        sa.Column("tasked_at", TZ),
        sa.Column("completed_at", TZ),
        sa.Column("finding", sa.String(32)),
    )
    op.create_index("ix_inspections_business", "inspections", ["business_key", "tasked_at"])


def downgrade() -> None:
    op.drop_table("inspections")
    op.drop_table("disputes")
    op.drop_table("file_reviews")
    op.drop_index("ix_anomalies_announced", "anomalies")
    with op.batch_alter_table("anomalies") as batch:
        batch.drop_column("announced_at")
        batch.drop_column("township")
