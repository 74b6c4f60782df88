"""What a running VM's configuration means for RAM state (uncovered writable devices, RAM size
and machine type), published by its node's agent like the power state, so that the snapshot
gates never ask a hypervisor during a read.

Revision ID: 0013
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vps") as batch:
        batch.add_column(sa.Column("vm_facts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vps") as batch:
        batch.drop_column("vm_facts")
