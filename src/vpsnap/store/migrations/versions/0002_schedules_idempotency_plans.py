"""Snapshot schedules, idempotency records, the VPS's plan, and an index for expiry sweeps.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vpsnap.store.tables import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vps") as batch:
        batch.add_column(sa.Column("plan", sa.String(100), nullable=True))
    op.create_index("ix_snapshots_expires_at", "snapshots", ["expires_at"])
    op.create_table(
        "snapshot_schedules",
        sa.Column(
            "vps_id",
            sa.String(40),
            sa.ForeignKey("vps.id", name="fk_snapshot_schedules_vps_id_vps"),
            primary_key=True,
        ),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("interval_hours", sa.Integer(), nullable=False),
        sa.Column("next_run_at", UtcDateTime(), nullable=True),
        sa.Column("last_run_at", UtcDateTime(), nullable=True),
        sa.Column("last_run_status", sa.String(300), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_snapshot_schedules_next_run_at", "snapshot_schedules", ["next_run_at"])
    op.create_table(
        "idempotency_records",
        sa.Column("owner", sa.String(40), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_headers", sa.JSON(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_idempotency_records_expires_at", "idempotency_records", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_records_expires_at", table_name="idempotency_records")
    op.drop_table("idempotency_records")
    op.drop_index("ix_snapshot_schedules_next_run_at", table_name="snapshot_schedules")
    op.drop_table("snapshot_schedules")
    op.drop_index("ix_snapshots_expires_at", table_name="snapshots")
    with op.batch_alter_table("vps") as batch:
        batch.drop_column("plan")
