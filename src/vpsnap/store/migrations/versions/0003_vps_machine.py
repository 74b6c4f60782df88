"""How vpsnap reaches a VPS's VM: a managed QEMU launch spec, a QMP socket, or a libvirt
domain (``vps.machine``, JSON; NULL keeps the disk-images-only VPS of before).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vps") as batch:
        batch.add_column(sa.Column("machine", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vps") as batch:
        batch.drop_column("machine")
