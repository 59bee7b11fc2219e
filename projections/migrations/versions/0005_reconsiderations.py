"""Reconsiderations on the case registry, for the yearly figures (复议、撤改).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cases") as batch:
        batch.add_column(sa.Column("reconsideration_filed_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("reconsideration_result", sa.String(32)))
    op.create_index("ix_cases_filed_at", "cases", ["filed_at"])
    op.create_index("ix_cases_reconsideration_filed_at", "cases", ["reconsideration_filed_at"])


def downgrade() -> None:
    op.drop_index("ix_cases_reconsideration_filed_at", "cases")
    op.drop_index("ix_cases_filed_at", "cases")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("reconsideration_result")
        batch.drop_column("reconsideration_filed_at")
