"""Trust: expiring and rotated keys, the hash-chained archive, per-party keys and parties' data.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", TZ))
        batch.add_column(sa.Column("replaced_by", sa.String(32)))
    op.create_index("ix_api_keys_unit", "api_keys", ["unit_id"])
    op.create_table(
        "archive",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_archive_subject", "archive", ["subject"])
    op.create_table(
        "archive_head",
        sa.Column("chain", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "party_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("party_ref", sa.String(64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("last_seen_at", TZ, nullable=False),
        sa.Column("shredded_at", TZ, nullable=True),
    )
    op.create_index("ix_party_keys_party", "party_keys", ["party_ref"])
    op.create_table(
        "parties",
        sa.Column("subject", sa.String(128), primary_key=True),
        sa.Column("area", sa.String(64), primary_key=True),
        sa.Column("party_ref", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=True),
        sa.Column("name_ct", sa.Text, nullable=True),
        sa.Column("id_number_ct", sa.Text, nullable=True),
        sa.Column("phone_ct", sa.Text, nullable=True),
        sa.Column("address_ct", sa.Text, nullable=True),
        sa.Column("updated_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("parties")
    op.drop_index("ix_party_keys_party", "party_keys")
    op.drop_table("party_keys")
    op.drop_table("archive_head")
    op.drop_index("ix_archive_subject", "archive")
    op.drop_table("archive")
    op.drop_index("ix_api_keys_unit", "api_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("replaced_by")
        batch.drop_column("expires_at")
