"""Ports: what the services need from a hypervisor, and what they need from storage.

Drivers (``vpsnap.drivers``) and the store (``vpsnap.store``) implement these; the services and
the job handlers depend only on the protocols.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from vpsnap.domain.audit import AuditEvent, AuditFilter
from vpsnap.domain.disks import DiskFile, DiskOwner
from vpsnap.domain.idempotency import IdempotencyRecord
from vpsnap.domain.model import (
    Account,
    ApiKey,
    Consistency,
    IntentState,
    Job,
    JobLane,
    JobStatus,
    PowerAction,
    PowerState,
    Snapshot,
    SnapshotStatus,
    VmConfig,
    VmFacts,
    Vps,
    VpsRef,
    WriteIntent,
)
from vpsnap.domain.nodes import Node, NodeStats
from vpsnap.domain.schedules import Schedule
from vpsnap.domain.storage import DataStore, VpsStorage
from vpsnap.domain.users import Session, User
from vpsnap.domain.webhooks import (
    MessageState,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)

# ---------------------------------------------------------------------------------------------
# Hypervisor


@dataclass(frozen=True, slots=True)
class RestorePoint:
    """A snapshot as the hypervisor sees it: present on some or all disks of a VPS."""

    name: str
    disks: tuple[str, ...]
    vm_state_size: int = 0
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    name: str
    include_memory_state: bool = False
    quiesce: bool = True


NOT_RUNNING_REASON = "the VM was not running: there was no RAM to save and no guest agent to ask"
"""The consistency reason of every snapshot taken of a stopped VM (its disk files only)."""
QUIESCE_NOT_REQUESTED_REASON = "quiesce was not requested"


@dataclass(frozen=True, slots=True)
class TakenSnapshot:
    consistency: Consistency
    includes_memory_state: bool
    vm_config: VmConfig | None = None
    """With RAM state: the configuration it can be loaded into again (None: not known)."""
    consistency_reason: str | None = None
    """Why the consistency is not better than it is (e.g. no guest agent answered), for the
    VPS's owner: it names no host path. None for ``memory`` and ``filesystem``."""
    freeze_window_ms: float | None = None
    """From the guest-agent freeze request until its thaw was answered, when one was sent."""
    leftover_freeze_thawed: bool = False
    """A guest freeze left in place earlier (dead agent, crashed vpsnap) was found and thawed."""
    thaw_confirmed: bool | None = None
    """After a freeze: the agent confirmed the guest is thawed again (None: no freeze sent)."""


@dataclass(frozen=True, slots=True)
class RestoreOutcome:
    power_state_before: PowerState
    power_state_after: PowerState


@dataclass(frozen=True, slots=True)
class PowerOutcome:
    power_state_before: PowerState
    power_state_after: PowerState


class HypervisorDriver(Protocol):
    """One hypervisor backend. Every method raises only ``DomainError`` subclasses, whose
    ``detail`` names the customer's objects only (host paths go to ``log_detail``).

    ``create_snapshot`` either leaves the snapshot on every disk of the VPS or on none of them;
    ``delete_snapshot`` of a name that is not there succeeds (jobs may be re-run).
    """

    async def probe(self) -> None:
        """Raise ``HypervisorError`` when the backend cannot be used at all."""
        ...

    async def power_state(self, vps: Vps) -> PowerState: ...

    async def power_states(
        self, vpses: Sequence[Vps], *, concurrency: int = 8
    ) -> list[PowerState | Exception]:
        """The power state of each of ``vpses``, in order, as ``power_state`` reads it one VPS
        at a time; in place of a state, the exception ``power_state`` would have raised for
        that VPS (one unreadable VM does not fail the others). For the node's periodic pass
        over every VPS: the checks that need no VM (do the disk files exist?) are made
        together, in one thread hop; at most ``concurrency`` VMs are asked at once.
        """
        ...

    async def vm_facts(self, vps: Vps) -> VmFacts | None:
        """The running VM's facts for the RAM-snapshot gates; None when no VM of the VPS runs.

        As fast and bounded as ``power_state`` (the API calls it while listing snapshots).
        """
        ...

    async def list_restore_points(self, vps: Vps) -> list[RestorePoint]: ...

    async def create_snapshot(self, vps: Vps, request: SnapshotRequest) -> TakenSnapshot: ...

    async def delete_snapshot(self, vps: Vps, name: str) -> None: ...

    async def restore_snapshot(
        self, vps: Vps, name: str, *, recorded: VmConfig | None = None
    ) -> RestoreOutcome:
        """Roll back to ``name``, keeping the power state.

        ``recorded`` is the configuration the snapshot's RAM state was saved with: a running VM
        that differs is refused (``VmConfigChanged``) before anything is touched. A restore that
        fails after changing something raises ``RestoreIncomplete`` and leaves the VM in a
        defined state (never running on half-restored RAM or disks).
        """
        ...

    async def change_power(
        self, vps: Vps, action: PowerAction, *, force: bool = False
    ) -> PowerOutcome:
        """Carry out ``action`` and return once the VM is in the state it leads to.

        Idempotent: starting a running VM or stopping a stopped one changes nothing and
        succeeds (jobs may be re-run). ``VpsNotReady`` when the action cannot be done on this
        VPS (no machine to power, an unmanaged VM that is not running, a guest that ignored a
        graceful shutdown within the timeout).
        """
        ...


class DiskInspector(Protocol):
    """Reads what a disk image file is (``qemu-img info``), for registering VPS disks."""

    async def detect_format(self, path: str) -> str:
        """The image format (``qcow2``, ``raw``, …); ``HypervisorError`` when unreadable."""
        ...


# ---------------------------------------------------------------------------------------------
# Storage


@dataclass(frozen=True, slots=True)
class VpsFilter:
    name: str | None = None
    primary_ip: str | None = None
    node: str | None = None


@dataclass(frozen=True, slots=True)
class StoredKey:
    key: ApiKey
    account: Account


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What a worker asks of the queue: jobs of ``node`` for its free slots per lane.

    ``account_share`` caps, per lane, how many jobs of one account may be in progress on the
    node at once (None: no cap), so that one tenant never occupies every slot of a lane.
    """

    node: str
    worker: str
    now: datetime
    lease_until: datetime
    free: Mapping[JobLane, int]
    account_share: Mapping[JobLane, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredUser:
    user: User
    password_hash: str


@dataclass(frozen=True, slots=True)
class StoredSession:
    session: Session
    user: User


class Transaction(Protocol):
    """One database transaction. Everything a service does in one use case goes through one."""

    # accounts and keys
    async def add_account(self, account: Account) -> None: ...
    async def find_account_by_name(self, name: str) -> Account | None: ...
    async def list_accounts(self) -> list[Account]: ...
    async def add_api_key(self, key: ApiKey, secret_hash: str) -> None: ...
    async def find_api_key_by_hash(self, secret_hash: str) -> ApiKey | None: ...
    async def revoke_api_key(self, key_id: str, at: datetime) -> bool: ...
    async def list_api_keys(self, account_id: str | None) -> list[ApiKey]:
        """Every key (of one account, or of all), oldest first; revoked ones included."""
        ...

    async def record_key_use(self, key_id: str, at: datetime, *, not_since: datetime) -> None:
        """Set the key's ``last_used_at`` to ``at`` unless it is already ``not_since`` or
        later (so concurrent processes write it at most once per interval)."""
        ...

    # dashboard users and sessions (issue 11)
    async def get_account(self, account_id: str) -> Account | None: ...
    async def get_api_key(self, key_id: str) -> ApiKey | None: ...

    async def add_user(self, user: User, password_hash: str) -> None:
        """Raises ``Conflict`` when the email is taken (emails are unique across accounts)."""
        ...

    async def find_user_by_email(self, email: str) -> StoredUser | None: ...
    async def list_users(self, account_id: str | None) -> list[User]: ...
    async def set_user_password(self, user_id: str, password_hash: str) -> None: ...
    async def disable_user(self, user_id: str, at: datetime) -> bool: ...
    async def add_session(self, session: Session, token_hash: str) -> None: ...
    async def find_session(self, token_hash: str) -> StoredSession | None: ...
    async def touch_session(self, session_id: str, at: datetime) -> None: ...
    async def delete_session(self, session_id: str) -> None: ...
    async def delete_user_sessions(self, user_id: str) -> int: ...
    async def purge_sessions(self, seen_before: datetime, created_before: datetime) -> int:
        """Delete sessions idle since ``seen_before`` or signed in before ``created_before``."""
        ...

    # inventory
    async def add_vps(self, vps: Vps, disk_files: Sequence[DiskFile] | None = None) -> None: ...
    async def disk_owners(self, node: str, files: Sequence[DiskFile]) -> list[DiskOwner]: ...
    async def get_vps(self, vps_id: str, *, lock: bool = False) -> Vps | None: ...
    async def find_vps_by_name(self, account_id: str, name: str) -> Vps | None: ...
    async def list_vps(
        self, account_id: str | None, flt: VpsFilter, after_id: str | None, limit: int
    ) -> list[Vps]: ...
    async def set_current_snapshot(self, vps_id: str, name: str | None) -> None: ...
    async def update_vps(self, vps: Vps, disk_files: Sequence[DiskFile] | None = None) -> None:
        """Write the operator-editable fields (name, node, disks, slots, primary IP, machine)
        of ``vps``; ``Conflict`` when the new name is taken in the account. ``disk_files``
        re-index its disks (after a change of disks or node; ``DiskAlreadyRegistered`` when
        another VPS of the node holds one)."""
        ...

    async def remove_vps(self, vps_id: str) -> None:
        """Delete the VPS row with its snapshot records, schedule and finished jobs."""
        ...

    async def record_vm_facts(self, vps_id: str, facts: VmFacts | None) -> None:
        """Store what the node's agent observed of the running VM (None: not running)."""
        ...

    async def record_power_state(self, vps_id: str, state: PowerState, at: datetime) -> bool:
        """Store the power state observed at ``at`` if it differs from the stored one and the
        stored one is not newer; True if it was stored."""
        ...

    # nodes
    async def heartbeat(self, node: Node) -> None:
        """Insert or update the node's row (its ``drained`` flag is kept)."""
        ...

    async def get_node(self, name: str) -> Node | None: ...
    async def list_nodes(self) -> list[Node]: ...
    async def set_node_drained(self, name: str, drained: bool) -> bool: ...
    async def node_stats(self) -> dict[str, NodeStats]: ...
    async def unstarted_jobs(self, node: str, created_before: datetime, limit: int) -> list[Job]:
        """Queued or pending jobs of ``node`` created before ``created_before``, oldest first."""
        ...

    async def fail_unstarted_job(self, job: Job) -> bool:
        """Write ``job``'s failure (error, finished_at) if it is still queued or pending."""
        ...

    # snapshots
    async def list_snapshots(self, vps_id: str) -> list[Snapshot]: ...
    async def get_vps_with_snapshots(self, vps_id: str) -> tuple[Vps, list[Snapshot]] | None:
        """``get_vps`` and ``list_snapshots`` in one statement (one read, one round trip);
        None when no VPS has this id."""
        ...

    async def list_snapshots_of(self, vps_ids: Sequence[str]) -> dict[str, list[Snapshot]]:
        """``list_snapshots`` of many VPSes in one statement (every id is a key)."""
        ...

    async def get_snapshot(self, vps_id: str, name: str) -> Snapshot | None: ...
    async def add_snapshot(self, snapshot: Snapshot) -> None: ...
    async def update_snapshot(self, snapshot: Snapshot) -> None: ...
    async def set_snapshot_status(
        self, vps_id: str, name: str, status: SnapshotStatus, *, only_from: SnapshotStatus
    ) -> None:
        """Move the snapshot to ``status`` if it is in ``only_from`` now (else leave it)."""
        ...

    async def record_snapshot_taken(
        self,
        vps_id: str,
        name: str,
        consistency: Consistency,
        *,
        includes_memory_state: bool,
        parent_name: str | None,
        disk_created_at: datetime | None = None,
        vm_config: VmConfig | None = None,
        consistency_reason: str | None = None,
    ) -> None:
        """The snapshot exists on the hypervisor: it becomes ``available`` with these facts
        (``vm_config``: the VM configuration its RAM state fits, when it has RAM state)."""
        ...

    async def set_snapshot_missing_since(
        self, vps_id: str, name: str, at: datetime | None
    ) -> None: ...

    async def remove_snapshot(self, vps_id: str, name: str) -> None:
        """Remove the row; its children and the VPS's current pointer move to its parent."""
        ...

    # write intents
    async def add_write_intent(self, intent: WriteIntent) -> None: ...
    async def close_write_intents(
        self, job_id: str, state: IntentState, at: datetime, *, name: str | None = None
    ) -> int:
        """Close the job's open intents (only those for ``name`` when given); returns how many."""
        ...

    async def open_write_intents(self, vps_id: str) -> list[WriteIntent]: ...
    async def open_write_intents_of(self, vps_ids: Sequence[str]) -> dict[str, list[WriteIntent]]:
        """``open_write_intents`` of many VPSes in one statement (every id is a key)."""
        ...

    # jobs
    async def add_job(self, job: Job, node: str) -> None: ...
    async def get_job(self, job_id: str) -> Job | None: ...
    async def update_job(self, job: Job) -> None: ...
    async def finish_job(self, job: Job, worker: str) -> bool:
        """Write a job's final state if ``worker`` still holds its lease; False if it does not
        (the job was re-queued and someone else owns it now)."""
        ...

    async def record_job_journal(self, job_id: str, worker: str, journal: dict[str, Any]) -> bool:
        """Store the job's journal if ``worker`` still holds its lease; False if it does not."""
        ...

    async def count_unfinished_jobs(self, vps_id: str) -> int: ...
    async def add_jobs(self, jobs: Sequence[Job]) -> None:
        """Insert many jobs in one statement (each on its ``Job.node``)."""
        ...

    async def vps_with_unfinished_jobs(self, vps_ids: Sequence[str]) -> set[str]:
        """Which of these VPSes have a job ``queued``, ``in_progress`` or ``pending``."""
        ...

    async def vps_with_jobs_since(self, vps_ids: Sequence[str], since: datetime) -> set[str]:
        """Which of these VPSes had a job created at ``since`` or later (any status)."""
        ...

    async def has_active_job(self, vps_id: str) -> bool: ...
    async def list_jobs(
        self,
        account_id: str,
        *,
        vps_id: str | None,
        status: JobStatus | None,
        before_id: str | None,
        limit: int,
    ) -> list[Job]:
        """The account's jobs, newest first (ids are time-ordered), older than ``before_id``."""
        ...

    async def next_pending_job(self, vps_id: str) -> Job | None: ...
    async def jobs_for_snapshot(self, vps_id: str, snapshot_name: str) -> list[Job]:
        """Every job (kept) that concerned this snapshot name on this VPS, oldest first."""
        ...

    async def has_queued_jobs(self, node: str) -> bool:
        """Whether any job of ``node`` is queued (a read: what ``claim_jobs`` could take)."""
        ...

    async def claim_jobs(self, request: ClaimRequest) -> list[Job]:
        """Take the node's oldest queued jobs that fit the free slots of their lane and the
        account shares, leased to the worker."""
        ...

    async def hand_back(self, job_id: str, worker: str) -> bool:
        """Put a job this worker holds back in the queue (shutdown), not counting the attempt."""
        ...

    async def extend_lease(self, job_id: str, worker: str, lease_until: datetime) -> bool: ...
    async def requeue_orphaned(
        self, node: str | None, expired_before: datetime | None
    ) -> list[str]:
        """Put in-progress jobs whose lease ran out (all of them when ``expired_before`` is
        None) back in the queue; returns their ids."""
        ...

    async def count_jobs(self, status: JobStatus) -> int: ...
    async def count_snapshots(self, status: SnapshotStatus) -> int: ...
    async def purge_finished_jobs(self, before: datetime) -> int: ...

    # capacity
    async def set_snapshot_slots(self, vps_id: str, slots: int) -> None: ...

    # retention
    async def expired_snapshots(self, now: datetime, limit: int) -> list[Snapshot]:
        """``available`` snapshots whose ``expires_at`` has passed, soonest first."""
        ...

    async def expired_snapshot_keys(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """``expired_snapshots`` as (VPS id, name) pairs, without reading whole rows."""
        ...

    async def lock_vps_rows(self, vps_ids: Sequence[str]) -> list[VpsRef]:
        """Lock the rows of these VPSes in id order (so that two callers never wait for each
        other crosswise), as ``get_vps(lock=True)`` does for one; the ones that exist."""
        ...

    async def mark_expired_deleting(
        self, vps_ids: Sequence[str], now: datetime
    ) -> list[tuple[str, str]]:
        """Move every snapshot of these VPSes that is still ``available`` and expired by
        ``now`` to ``deleting``, in one conditional statement; the (VPS id, name) pairs it
        moved, soonest expiry first."""
        ...

    # schedules
    async def get_schedule(self, vps_id: str) -> Schedule | None: ...
    async def save_schedule(self, schedule: Schedule) -> None: ...
    async def delete_schedule(self, vps_id: str) -> bool: ...
    async def due_schedules(self, now: datetime, limit: int) -> list[Schedule]: ...

    # idempotency
    async def get_idempotency(self, owner: str, key: str) -> IdempotencyRecord | None: ...
    async def add_idempotency(self, record: IdempotencyRecord) -> None:
        """Raises ``IdempotencyKeyInUse`` if (owner, key) is recorded already."""
        ...

    async def complete_idempotency(
        self, owner: str, key: str, status: int, headers: dict[str, str], body: str
    ) -> None: ...
    async def remove_idempotency(self, owner: str, key: str) -> None: ...
    async def purge_idempotency(self, now: datetime) -> int: ...

    # -- operations (issue 12): audit trail, webhook outbox, data stores ---------------------
    async def add_audit_event(self, event: AuditEvent) -> None: ...
    async def add_audit_events(self, events: Sequence[AuditEvent]) -> None:
        """``add_audit_event`` for many, in one statement."""
        ...

    async def list_audit_events(
        self, flt: AuditFilter, before_id: str | None, limit: int
    ) -> list[AuditEvent]:
        """Newest first; ``before_id`` is the last id of the previous page."""
        ...

    async def purge_audit_events(self, before: datetime) -> int: ...
    async def api_key_account(self, key_id: str) -> str | None:
        """The account of an API key (revoked or not), None for an unknown id."""
        ...

    async def add_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None: ...
    async def update_webhook_endpoint(self, endpoint: WebhookEndpoint) -> None: ...
    async def get_webhook_endpoint(
        self, endpoint_id: str, *, lock: bool = False
    ) -> WebhookEndpoint | None: ...
    async def list_webhook_endpoints(self, account_id: str) -> list[WebhookEndpoint]: ...
    async def subscribed_webhook_endpoints(
        self, account_id: str, event_type: str
    ) -> list[WebhookEndpoint]: ...
    async def delete_webhook_endpoint(self, endpoint_id: str) -> bool: ...
    async def add_webhook_message(self, message: WebhookMessage) -> None: ...
    async def get_webhook_message(self, message_id: str) -> WebhookMessage | None: ...
    async def claim_webhook_messages(
        self, now: datetime, hold_until: datetime, limit: int
    ) -> list[WebhookMessage]:
        """Pending messages due by ``now``, each held until ``hold_until``."""
        ...

    async def update_webhook_message(self, message: WebhookMessage) -> None: ...
    async def fail_pending_webhook_messages(self, endpoint_id: str, at: datetime) -> int: ...
    async def count_webhook_messages(self, state: MessageState) -> int: ...
    async def add_webhook_delivery(self, delivery: WebhookDelivery) -> None: ...
    async def list_webhook_deliveries(
        self, endpoint_id: str, before_id: str | None, limit: int
    ) -> list[WebhookDelivery]: ...
    async def purge_webhook_history(self, before: datetime) -> int: ...

    async def save_data_store(self, store: DataStore) -> None: ...
    async def list_data_stores(self, node: str | None) -> list[DataStore]: ...
    async def remove_data_stores(self, node: str, keep: list[str]) -> int: ...
    async def save_vps_storage(self, usages: Sequence[VpsStorage]) -> None:
        """Store these VPSes' allocations (replacing what was stored for them), in a few
        statements whatever their number."""
        ...

    async def get_vps_storage(self, vps_id: str) -> VpsStorage | None: ...
    async def list_vps_storage(self, node: str | None) -> list[VpsStorage]: ...


class Store(Protocol):
    def transaction(
        self, *, read_only: bool = False, small: bool = False, bulk: bool = False
    ) -> AbstractAsyncContextManager[Transaction]:
        """A transaction; ``read_only=True`` promises no writes and never waits for writers.

        ``small=True`` (read-only only, else ``ValueError``) further promises a few statements
        that each read a bounded number of rows through an index (a page, one VPS's
        snapshots): the store may then run them without leaving the calling thread.
        ``bulk=True`` marks long statements (batches) that must not run on the event loop.
        """
        ...

    async def ping(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Job signals


class JobWatch(Protocol):
    latest: Job | None
    """The job's state as of the last change, when the notifier knew it (saves a re-read)."""

    async def wait(self, timeout: float) -> bool:
        """Wait for the next change of the watched job, or the timeout; True when it changed.

        A change that happened since the watch began (or since the last wait) counts, so
        reading the job after starting the watch can never miss one.
        """
        ...


class JobEvents(Protocol):
    """Wakes workers when jobs are queued and waiters (long-poll) when a job changes.

    ``jobs_queued`` and ``job_changed`` are called only after the change has committed.
    """

    def jobs_queued(self) -> None: ...

    def job_changed(self, job_id: str, job: Job | None = None) -> None:
        """``job`` is the committed new state when the caller has it at hand."""
        ...

    def watch(self, job_id: str) -> AbstractContextManager[JobWatch]: ...
