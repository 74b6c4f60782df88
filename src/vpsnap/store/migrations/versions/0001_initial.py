"""Initial schema: accounts, API keys, VPS inventory, snapshots and jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from vpsnap.store.tables import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_accounts_name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", name="fk_api_keys_account_id_accounts"),
            nullable=False,
        ),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("revoked_at", UtcDateTime(), nullable=True),
        sa.UniqueConstraint("secret_hash", name="uq_api_keys_secret_hash"),
    )
    op.create_table(
        "vps",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", name="fk_vps_account_id_accounts"),
            nullable=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("name_key", sa.String(100), nullable=False),
        sa.Column("node", sa.String(100), nullable=False),
        sa.Column("disks", sa.JSON(), nullable=False),
        sa.Column("snapshot_slots", sa.Integer(), nullable=False),
        sa.Column("service_status", sa.String(20), nullable=False),
        sa.Column("primary_ip", sa.String(64), nullable=True),
        sa.Column("operating_system", sa.JSON(), nullable=True),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.Column("billing", sa.JSON(), nullable=True),
        sa.Column("current_snapshot", sa.String(40), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("account_id", "name_key", name="uq_vps_account_name"),
    )
    op.create_index("ix_vps_primary_ip", "vps", ["primary_ip"])
    op.create_table(
        "snapshots",
        sa.Column(
            "vps_id",
            sa.String(40),
            sa.ForeignKey("vps.id", name="fk_snapshots_vps_id_vps"),
            primary_key=True,
        ),
        sa.Column("name_key", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("origin", sa.String(20), nullable=False),
        sa.Column("consistency", sa.String(20), nullable=False),
        sa.Column("includes_memory_state", sa.Boolean(), nullable=False),
        sa.Column("parent_name", sa.String(40), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(40),
            sa.ForeignKey("accounts.id", name="fk_jobs_account_id_accounts"),
            nullable=False,
        ),
        sa.Column(
            "vps_id",
            sa.String(40),
            sa.ForeignKey("vps.id", name="fk_jobs_vps_id_vps"),
            nullable=False,
        ),
        sa.Column("node", sa.String(100), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("snapshot_name", sa.String(40), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_jobs_status_node", "jobs", ["status", "node"])
    op.create_index("ix_jobs_vps_status", "jobs", ["vps_id", "status"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("snapshots")
    op.drop_index("ix_vps_primary_ip", table_name="vps")
    op.drop_table("vps")
    op.drop_table("api_keys")
    op.drop_table("accounts")
