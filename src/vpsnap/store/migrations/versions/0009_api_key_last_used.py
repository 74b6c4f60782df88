"""For ``vpsnap admin key list``: a name for each API key (what it is for) and when it was
last used (``api_keys.last_used_at``, recorded at most once a minute per key, not on every
request); and an index for listing an account's jobs newest first (``GET /api/jobs``).

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vpsnap.store.tables import UtcDateTime

revision = "0009"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("last_used_at", UtcDateTime(), nullable=True))
        batch.add_column(sa.Column("name", sa.String(100), nullable=True))
    op.create_index("ix_jobs_account_id", "jobs", ["account_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_account_id", table_name="jobs")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("name")
        batch.drop_column("last_used_at")
