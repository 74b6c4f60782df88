"""Indexes for fleet scale (issue 15): an account's VPS list by id, the retention sweep's
scan of available snapshots by expiry, and a partial index of unfinished jobs per VPS (the
check every enqueue, sweep and reconcile makes; PostgreSQL ran it as a scan of ``jobs``).

Revision ID: 0014
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None

_UNFINISHED = "status IN ('queued', 'in_progress', 'pending')"


def upgrade() -> None:
    op.create_index("ix_vps_account_id", "vps", ["account_id", "id"])
    op.create_index("ix_snapshots_status_expires_at", "snapshots", ["status", "expires_at"])
    op.create_index(
        "ix_jobs_unfinished_vps",
        "jobs",
        ["vps_id"],
        sqlite_where=sa.text(_UNFINISHED),
        postgresql_where=sa.text(_UNFINISHED),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_unfinished_vps", table_name="jobs")
    op.drop_index("ix_snapshots_status_expires_at", table_name="snapshots")
    op.drop_index("ix_vps_account_id", table_name="vps")
