"""The database schema. Alembic migrations under ``migrations/`` create exactly this."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timestamps stored as naive UTC and always read back timezone-aware.

    SQLite has no timezone type; storing naive UTC everywhere keeps both backends identical.
    """

    impl = sa.DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(
        self,
        value: datetime | None,
        dialect: Dialect,  # noqa: ARG002 - TypeDecorator API
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(
        self,
        value: Any,
        dialect: Dialect,  # noqa: ARG002 - TypeDecorator API
    ) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # pragma: no cover - SQLite raw strings, defensive
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scopes", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("expires_at", UtcDateTime(), nullable=True),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Column("last_used_at", UtcDateTime(), nullable=True),  # migration 0009
    sa.Column("name", sa.String(100), nullable=True),  # migration 0009
)

vps = sa.Table(
    "vps",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
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
    sa.Column("plan", sa.String(100), nullable=True),
    # How to reach the VM (store/machines.py); NULL: disk images only.
    sa.Column("machine", sa.JSON(), nullable=True),
    # Published by the node's agent when it changes (domain/nodes.py); NULL: never observed.
    sa.Column("power_state", sa.String(20), nullable=True),
    sa.Column("power_state_at", UtcDateTime(), nullable=True),
    # With the power state: what the running VM means for RAM state (domain VmFacts); 0013.
    sa.Column("vm_facts", sa.JSON(), nullable=True),
    sa.UniqueConstraint("account_id", "name_key", name="uq_vps_account_name"),
)
sa.Index("ix_vps_primary_ip", vps.c.primary_ip)
# Migration 0014: an account's VPS list is paged by id; without it SQLite sorts the account.
sa.Index("ix_vps_account_id", vps.c.account_id, vps.c.id)

# One row per disk of a VPS, so that one disk file belongs to one VPS once (domain/disks.py):
# unique per node by real path (hashed: a path can outgrow an index entry) and by
# (device, inode). `vps.disks` keeps the order the driver uses; `add_vps` writes both.
vps_disks = sa.Table(
    "vps_disks",
    metadata,
    sa.Column("vps_id", sa.String(40), sa.ForeignKey("vps.id"), primary_key=True),
    sa.Column("position", sa.Integer(), primary_key=True),
    sa.Column("node", sa.String(100), nullable=False),
    sa.Column("path", sa.Text(), nullable=False),
    sa.Column("path_key", sa.String(64), nullable=False),
    # "<st_dev>:<st_ino>"; NULL when the file could not be read where it was registered.
    sa.Column("file_id", sa.String(64), nullable=True),
    sa.UniqueConstraint("node", "path_key", name="uq_vps_disks_node_path_key"),
    sa.UniqueConstraint("node", "file_id", name="uq_vps_disks_node_file_id"),
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("vps_id", sa.String(40), sa.ForeignKey("vps.id"), primary_key=True),
    # Names are unique per VPS case-insensitively: the key column is the lowercased name.
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
    # The qcow2 date of the snapshot as vpsnap made it: proof of ownership before deleting.
    sa.Column("disk_created_at", UtcDateTime(), nullable=True),
    sa.Column("missing_since", UtcDateTime(), nullable=True),
    # RAM size and machine type the snapshot's RAM state fits (migration 0007); NULL: no RAM
    # state, or taken before vpsnap recorded it.
    sa.Column("vm_config", sa.JSON(), nullable=True),
    # Why the consistency is not better (no agent answered, VM not running, ...); 0008.
    sa.Column("consistency_reason", sa.String(300), nullable=True),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("vps_id", sa.String(40), sa.ForeignKey("vps.id"), nullable=False),
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
    sa.Column("lane", sa.String(10), nullable=False, server_default="quick"),
    # What the job recorded while it ran (jobs/journal.py); NULL: nothing yet.
    sa.Column("journal", sa.JSON(), nullable=True),
    # Who asked for it (an audit actor) and in which request (issue 12).
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("created_by", sa.JSON(), nullable=True),
)
sa.Index("ix_jobs_status_node", jobs.c.status, jobs.c.node)
sa.Index("ix_jobs_vps_status", jobs.c.vps_id, jobs.c.status)
sa.Index("ix_jobs_account_id", jobs.c.account_id, jobs.c.id)  # migration 0009: GET /api/jobs
# Migration 0015: "which of these VPSes had a job since the last reconcile pass?" finds the few
# recent jobs of each VPS, not its whole history.
sa.Index("ix_jobs_vps_created_at", jobs.c.vps_id, jobs.c.created_at)
# Migration 0014 (issue 15): "does this VPS have an unfinished job?" is asked by every enqueue,
# sweep and reconcile; a partial index holds only the few unfinished jobs, whatever the history.
_UNFINISHED_STATUSES = "status IN ('queued', 'in_progress', 'pending')"
sa.Index(
    "ix_jobs_unfinished_vps",
    jobs.c.vps_id,
    sqlite_where=sa.text(_UNFINISHED_STATUSES),
    postgresql_where=sa.text(_UNFINISHED_STATUSES),
)

nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("version", sa.String(40), nullable=False),
    sa.Column("agent", sa.String(200), nullable=True),
    sa.Column("started_at", UtcDateTime(), nullable=False),
    sa.Column("last_seen_at", UtcDateTime(), nullable=False),
    sa.Column("drained", sa.Boolean(), nullable=False, server_default=sa.false()),
)

# Kept independently of jobs (which are purged): an open intent is the only proof that a
# snapshot on disk without a row is vpsnap's own leftover.
write_intents = sa.Table(
    "write_intents",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("vps_id", sa.String(40), sa.ForeignKey("vps.id"), nullable=False),
    sa.Column("name_key", sa.String(40), nullable=False),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("job_id", sa.String(40), nullable=False),
    sa.Column("disks", sa.JSON(), nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("closed_at", UtcDateTime(), nullable=True),
)
sa.Index("ix_write_intents_vps_state", write_intents.c.vps_id, write_intents.c.state)
sa.Index("ix_write_intents_job", write_intents.c.job_id)

snapshot_schedules = sa.Table(
    "snapshot_schedules",
    metadata,
    sa.Column("vps_id", sa.String(40), sa.ForeignKey("vps.id"), primary_key=True),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("interval_hours", sa.Integer(), nullable=False),
    sa.Column("next_run_at", UtcDateTime(), nullable=True),
    sa.Column("last_run_at", UtcDateTime(), nullable=True),
    sa.Column("last_run_status", sa.String(300), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)
sa.Index("ix_snapshot_schedules_next_run_at", snapshot_schedules.c.next_run_at)

idempotency_records = sa.Table(
    "idempotency_records",
    metadata,
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
sa.Index("ix_idempotency_records_expires_at", idempotency_records.c.expires_at)
sa.Index("ix_snapshots_expires_at", snapshots.c.expires_at)
# Migration 0014: the retention sweep reads available snapshots by expiry; on expires_at alone
# each batch first stepped over every snapshot already marked deleting (quadratic).
sa.Index("ix_snapshots_status_expires_at", snapshots.c.status, snapshots.c.expires_at)

# -- issue 12: audit trail, webhook outbox, data stores ------------------------------------------
# Kept independently of jobs, accounts and VPSes (no foreign keys): the trail must outlive what
# it describes, and is purged only after the audit retention.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("occurred_at", UtcDateTime(), nullable=False),
    sa.Column("account_id", sa.String(40), nullable=True),
    sa.Column("actor_kind", sa.String(20), nullable=False),
    sa.Column("actor_id", sa.String(200), nullable=False),
    sa.Column("actor_label", sa.String(200), nullable=True),
    sa.Column("action", sa.String(60), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("target_type", sa.String(40), nullable=True),
    sa.Column("target_id", sa.String(200), nullable=True),
    sa.Column("vps_id", sa.String(40), nullable=True),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("client_ip", sa.String(64), nullable=True),
    sa.Column("problem_code", sa.String(60), nullable=True),
    sa.Column("details", sa.JSON(), nullable=True),
)
sa.Index("ix_audit_events_account_id", audit_events.c.account_id, audit_events.c.id)
sa.Index("ix_audit_events_occurred_at", audit_events.c.occurred_at)

webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("description", sa.String(255), nullable=True),
    sa.Column("event_types", sa.JSON(), nullable=False),
    # Needed in clear to sign; shown to the tenant once, at creation.
    sa.Column("secret", sa.String(100), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("last_success_at", UtcDateTime(), nullable=True),
    sa.Column("last_failure_at", UtcDateTime(), nullable=True),
    sa.Column("disabled_at", UtcDateTime(), nullable=True),
    sa.Column("disabled_reason", sa.String(300), nullable=True),
)
sa.Index("ix_webhook_endpoints_account_id", webhook_endpoints.c.account_id)

# The transactional outbox: one message per (event, endpoint), written with the state change.
webhook_outbox = sa.Table(
    "webhook_outbox",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("endpoint_id", sa.String(40), nullable=False),
    sa.Column("account_id", sa.String(40), nullable=False),
    sa.Column("event_type", sa.String(60), nullable=False),
    sa.Column("payload", sa.JSON(), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("finished_at", UtcDateTime(), nullable=True),
)
sa.Index("ix_webhook_outbox_state_next", webhook_outbox.c.state, webhook_outbox.c.next_attempt_at)
sa.Index("ix_webhook_outbox_endpoint", webhook_outbox.c.endpoint_id, webhook_outbox.c.state)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("message_id", sa.String(40), nullable=False),
    sa.Column("endpoint_id", sa.String(40), nullable=False),
    sa.Column("event_type", sa.String(60), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("attempted_at", UtcDateTime(), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("error", sa.String(300), nullable=True),
    sa.Column("duration_ms", sa.Integer(), nullable=False),
)
sa.Index(
    "ix_webhook_deliveries_endpoint", webhook_deliveries.c.endpoint_id, webhook_deliveries.c.id
)
sa.Index("ix_webhook_deliveries_attempted_at", webhook_deliveries.c.attempted_at)

# Published by the agent of each node (embedded: the serve process): what only a host can see.
data_stores = sa.Table(
    "data_stores",
    metadata,
    sa.Column("node", sa.String(100), primary_key=True),
    # The mount point of the filesystem that holds VPS disks.
    sa.Column("path", sa.String(1000), primary_key=True),
    sa.Column("total_bytes", sa.BigInteger(), nullable=False),
    sa.Column("free_bytes", sa.BigInteger(), nullable=False),
    sa.Column("observed_at", UtcDateTime(), nullable=False),
)

vps_storage = sa.Table(
    "vps_storage",
    metadata,
    sa.Column("vps_id", sa.String(40), primary_key=True),
    sa.Column("node", sa.String(100), nullable=False),
    # Mount points (data_stores.path) of the filesystems its disks are on.
    sa.Column("stores", sa.JSON(), nullable=False),
    sa.Column("allocated_bytes", sa.BigInteger(), nullable=False),
    sa.Column("observed_at", UtcDateTime(), nullable=False),
)
# -- dashboard users and sessions (issue 11, migration 0006) ------------------------------------

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
    # Normalized (trimmed, lowercased): one user per address across all accounts, so signing
    # in needs nothing but the address.
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("disabled_at", UtcDateTime(), nullable=True),
)
sa.Index("ix_users_account_id", users.c.account_id)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
    # SHA-256 of the cookie value: the database never holds a usable session token.
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("last_seen_at", UtcDateTime(), nullable=False),
)
sa.Index("ix_sessions_user_id", sessions.c.user_id)
