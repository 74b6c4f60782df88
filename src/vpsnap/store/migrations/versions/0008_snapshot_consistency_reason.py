"""Why a snapshot's consistency is what it is (``snapshots.consistency_reason``, nullable; NULL
for ``memory`` and ``filesystem`` snapshots and for rows from before).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("consistency_reason", sa.String(300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("consistency_reason")
