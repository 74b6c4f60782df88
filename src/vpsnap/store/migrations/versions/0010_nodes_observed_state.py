"""Scale-out (issue 10): nodes with their agents' heartbeats and drain flag, and each VPS's
power state as its node's agent last observed it.

Revision ID: 0010
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vpsnap.store.tables import UtcDateTime

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("agent", sa.String(200), nullable=True),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("last_seen_at", UtcDateTime(), nullable=False),
        sa.Column("drained", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("name", name="pk_nodes"),
    )
    with op.batch_alter_table("vps") as batch:
        batch.add_column(sa.Column("power_state", sa.String(20), nullable=True))
        batch.add_column(sa.Column("power_state_at", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vps") as batch:
        batch.drop_column("power_state_at")
        batch.drop_column("power_state")
    op.drop_table("nodes")
