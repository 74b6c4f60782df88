"""The VM configuration a snapshot's RAM state fits (``snapshots.vm_config``, JSON: RAM size and
machine type), so a restore into a VM that changed since is refused before anything is
touched (issue 9, kind 3). NULL for snapshots without RAM state and for older rows.

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("vm_config", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("vm_config")
