"""Data safety (issue 9): write intents (proof of what vpsnap wrote on disk), the job journal
(steps a job took, read by a re-run after a crash), job lanes (slow jobs never hold every
worker slot), and per snapshot the hypervisor's creation date and when it went missing.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vpsnap.store.tables import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "write_intents",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("vps_id", sa.String(40), nullable=False),
        sa.Column("name_key", sa.String(40), nullable=False),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("disks", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("closed_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["vps_id"], ["vps.id"], name="fk_write_intents_vps_id_vps"),
        sa.PrimaryKeyConstraint("id", name="pk_write_intents"),
    )
    op.create_index("ix_write_intents_vps_state", "write_intents", ["vps_id", "state"])
    op.create_index("ix_write_intents_job", "write_intents", ["job_id"])
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("disk_created_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("missing_since", UtcDateTime(), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lane", sa.String(10), nullable=False, server_default="quick"))
        batch.add_column(sa.Column("journal", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("journal")
        batch.drop_column("lane")
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("missing_since")
        batch.drop_column("disk_created_at")
    op.drop_index("ix_write_intents_job", table_name="write_intents")
    op.drop_index("ix_write_intents_vps_state", table_name="write_intents")
    op.drop_table("write_intents")
