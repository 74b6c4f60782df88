"""Entities of the snapshot domain and the states they move through."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from vpsnap.domain.audit import Actor

JsonObject = dict[str, Any]


class ServiceStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"
    PENDING = "pending"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FRAUD = "fraud"
    UNKNOWN = "unknown"


class PowerState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    STARTING = "starting"
    STOPPING = "stopping"
    PAUSED = "paused"
    PROVISIONING = "provisioning"
    ERROR = "error"
    UNKNOWN = "unknown"


class SnapshotStatus(StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    RESTORING = "restoring"
    DELETING = "deleting"
    FAILED = "failed"


# A deleting snapshot already gives its slot back: its delete runs before anything queued later.
SLOT_HOLDING_STATUSES = frozenset(
    {SnapshotStatus.CREATING, SnapshotStatus.AVAILABLE, SnapshotStatus.RESTORING}
)


class SnapshotOrigin(StrEnum):
    MANUAL = "manual"
    SCHEDULED = "scheduled"


class Consistency(StrEnum):
    CRASH = "crash"
    FILESYSTEM = "filesystem"
    MEMORY = "memory"


class PowerAction(StrEnum):
    """What ``POST /api/v2/vps/{id}/actions/{action}`` asks of the VM (docs/power.md)."""

    START = "start"
    SHUTDOWN = "shutdown"  # graceful: ACPI power button, wait for the guest to power off
    STOP = "stop"  # hard power off
    RESTART = "restart"  # graceful shutdown then start; with force, stop then start
    RESET = "reset"  # hard reset; the process keeps running


class JobType(StrEnum):
    VPS_POWER = "vps.power"
    SNAPSHOT_CREATE = "snapshot.create"
    SNAPSHOT_DELETE = "snapshot.delete"
    SNAPSHOT_RESTORE = "snapshot.restore"
    SNAPSHOT_EXPIRE = "snapshot.expire"
    SNAPSHOT_SCHEDULED = "snapshot.scheduled"


class JobLane(StrEnum):
    """Which worker slots a job may take (docs/how-snapshots-work.md, "Fair queues").

    Jobs that can wait on a guest or write a VM's RAM for minutes (a graceful shutdown, a
    snapshot with RAM state) run in the ``slow`` lane, so they never hold every slot that a
    40 ms snapshot of another tenant needs.
    """

    QUICK = "quick"
    SLOW = "slow"


class JobStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED)


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    account_id: str
    scopes: frozenset[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = None
    """When a request last authenticated with it, to within a minute (None: never)."""
    name: str | None = None
    """What the operator named it for (``vpsnap admin key create --name``)."""

    def is_usable(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class OperatingSystem:
    display_name: str
    family: str
    version: str | None = None
    variant: str | None = None


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_cores: int
    memory_gb: float
    storage_gb: float


@dataclass(frozen=True, slots=True)
class Billing:
    amount: str
    currency_code: str
    billing_cycle: str
    is_payg: bool = False


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """A QEMU VM that vpsnap starts and supervises itself (its sockets live in the data dir)."""

    memory_mib: int
    cpus: int
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class QmpAttachment:
    """A QEMU VM run by someone else: vpsnap only talks to its monitor (and guest agent)."""

    qmp_socket: str
    guest_agent_socket: str | None = None


@dataclass(frozen=True, slots=True)
class LibvirtDomain:
    """A libvirt domain (by name or UUID) on a connection URI such as ``qemu:///system``."""

    uri: str
    domain: str


Machine = LaunchSpec | QmpAttachment | LibvirtDomain
"""How vpsnap reaches the VM of a VPS. A VPS without one is only its disk images: it is always
``stopped`` and snapshotted offline with ``qemu-img``."""


@dataclass(frozen=True, slots=True)
class VmFacts:
    """What a running VM's configuration means for snapshots with RAM state (``vm_facts``)."""

    config: VmConfig | None
    """RAM size and machine type now (None: the hypervisor does not tell)."""
    uncovered_devices: tuple[str, ...] = ()
    """Writable devices (guest-visible ids, e.g. ``data0`` or ``vdb``) that a snapshot of the
    VPS's disks would not cover: RAM state saved or loaded without them is refused."""
    live_snapshots_include_memory: bool = False
    """Every live snapshot carries RAM state (libvirt), so every one needs full coverage."""
    restarts_for_disk_restore: bool = True
    """A disk-only restore of this running VM stops and starts it; False: vpsnap cannot start
    it again (an attached VM), so such a restore is refused while it runs."""
    restore_reverts_definition: bool = False
    """A restore brings back the VM's definition saved with the snapshot too (libvirt), so the
    VM's configuration now does not decide whether RAM state can be loaded."""

    def to_json(self) -> JsonObject:
        """The stored form (``vps.vm_facts``, published by the node's agent)."""
        return {
            "config": self.config.to_json() if self.config else None,
            "uncoveredDevices": list(self.uncovered_devices),
            "liveSnapshotsIncludeMemory": self.live_snapshots_include_memory,
            "restartsForDiskRestore": self.restarts_for_disk_restore,
            "restoreRevertsDefinition": self.restore_reverts_definition,
        }

    @classmethod
    def from_json(cls, data: object) -> VmFacts | None:
        """The stored form back; None for anything else."""
        if not isinstance(data, dict):
            return None
        devices = data.get("uncoveredDevices")
        return cls(
            config=VmConfig.from_json(data.get("config")),
            uncovered_devices=tuple(str(d) for d in devices) if isinstance(devices, list) else (),
            live_snapshots_include_memory=bool(data.get("liveSnapshotsIncludeMemory")),
            restarts_for_disk_restore=bool(data.get("restartsForDiskRestore", True)),
            restore_reverts_definition=bool(data.get("restoreRevertsDefinition")),
        )


@dataclass(frozen=True, slots=True)
class Vps:
    id: str
    account_id: str
    name: str
    node: str
    disks: tuple[str, ...]
    snapshot_slots: int
    service_status: ServiceStatus
    created_at: datetime
    primary_ip: str | None = None
    operating_system: OperatingSystem | None = None
    resources: Resources = field(default_factory=lambda: Resources(1, 1.0, 0.0))
    billing: Billing | None = None
    current_snapshot: str | None = None
    plan: str | None = None
    """The operator's plan id (capacity configuration), when the VPS is on one."""
    machine: Machine | None = None
    power_state: PowerState | None = None
    """As its node's agent last observed it (None: never observed); see ``domain.nodes``."""
    power_state_at: datetime | None = None
    vm_facts: VmFacts | None = None
    """What the running VM's configuration means for RAM state, as its node's agent last
    observed it (None: not running, or not observed)."""


@dataclass(frozen=True, slots=True)
class VpsRef:
    """Who a VPS belongs to and where it runs: what queueing a job for it needs (the
    scheduler's set-based work reads no more than this)."""

    id: str
    account_id: str
    node: str


@dataclass(frozen=True, slots=True)
class VmConfig:
    """What RAM state can only be loaded into: a VM with the same RAM size and machine type.

    Recorded with every snapshot that includes RAM state, so a restore into a VM that was
    changed since is refused before anything is touched (QEMU would roll the disks back first
    and only then fail to load the RAM).
    """

    memory_bytes: int
    machine_type: str
    """QEMU's concrete machine type, e.g. ``pc-i440fx-7.2`` (never an alias such as ``pc``)."""

    def describe(self) -> str:
        return f"{self.memory_bytes // (1024 * 1024)} MiB of RAM, machine {self.machine_type}"

    def to_json(self) -> JsonObject:
        """The stored form (``snapshots.vm_config``, a restore job's payload)."""
        return {"memoryBytes": self.memory_bytes, "machineType": self.machine_type}

    @classmethod
    def from_json(cls, data: object) -> VmConfig | None:
        """The stored form back; None for anything else (nothing recorded, an older row)."""
        if not isinstance(data, dict):
            return None
        memory, machine = data.get("memoryBytes"), data.get("machineType")
        if isinstance(memory, int) and isinstance(machine, str):
            return cls(memory_bytes=memory, machine_type=machine)
        return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    vps_id: str
    name: str
    description: str | None
    status: SnapshotStatus
    origin: SnapshotOrigin
    consistency: Consistency
    includes_memory_state: bool
    parent_name: str | None
    created_at: datetime
    expires_at: datetime
    disk_created_at: datetime | None = None
    """The creation time the hypervisor recorded for this snapshot when vpsnap made it (qcow2's
    date, the oldest over the disks): proof that a snapshot of this name on disk is the one
    vpsnap wrote. None for snapshots recorded before vpsnap kept it, and while ``creating``."""
    missing_since: datetime | None = None
    """When reconciliation first found it missing from the disks; None while it is seen."""
    vm_config: VmConfig | None = None
    """The VM's configuration when RAM state was saved (None: no RAM state, or not recorded)."""
    consistency_reason: str | None = None
    """Why ``consistency`` is not better than it is; None for ``memory`` and ``filesystem``."""

    @property
    def holds_slot(self) -> bool:
        return self.status in SLOT_HOLDING_STATUSES


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    account_id: str
    vps_id: str
    type: JobType
    status: JobStatus
    snapshot_name: str | None
    payload: JsonObject
    progress: int
    result: JsonObject | None
    error: JsonObject | None
    attempts: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    lane: JobLane = JobLane.QUICK
    journal: JsonObject = field(default_factory=dict)
    node: str = ""
    """The hypervisor node whose agent runs it (the VPS's node when it was queued)."""

    @property
    def snapshot(self) -> str:
        """The snapshot a snapshot job acts on; ``ValueError`` for a job without one."""
        if self.snapshot_name is None:
            raise ValueError(f"{self.type.value} job {self.id} acts on no snapshot")
        return self.snapshot_name

    """Facts the job recorded durably while it ran (``vpsnap.jobs.journal``): what it found
    before touching anything and which steps took effect, read by a re-run after a crash."""
    request_id: str | None = None
    """The request that queued it (``X-Request-Id``); None for the scheduler's own jobs."""
    created_by: Actor | None = None
    """Who asked for it (an API key, a dashboard user, the scheduler)."""


class IntentState(StrEnum):
    OPEN = "open"
    DONE = "done"
    UNDONE = "undone"


@dataclass(frozen=True, slots=True)
class WriteIntent:
    """A job's durable note, made after its pre-checks and before the hypervisor call, that it
    is about to write snapshot ``name`` on the VPS's ``disks``.

    Only an intent proves that a snapshot on disk without a database row is vpsnap's own
    leftover: ``open`` until the job's outcome is settled (``done``: the snapshot row owns it
    now; ``undone``: nothing of it is on disk).
    """

    id: str
    vps_id: str
    name: str
    job_id: str
    disks: tuple[str, ...]
    state: IntentState
    created_at: datetime
    closed_at: datetime | None = None
