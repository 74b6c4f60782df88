"""What each job type carries: a typed payload per type (what was asked), stored as JSON in
``jobs.payload`` under the same camelCase keys as ever, so rows written before keep reading.

    vps.power                                PowerPayload(action, force)
    snapshot.create, snapshot.scheduled      SnapshotPayload(include_memory_state, quiesce,
                                                             replaces)
    snapshot.restore                         RestorePayload(vm_config)
    snapshot.delete, snapshot.expire         (nothing)

Handlers read their payload with ``payload_of``; the snapshot a snapshot job acts on is
``Job.snapshot``.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpsnap.domain.model import Job, JobType, JsonObject, PowerAction, VmConfig


@dataclass(frozen=True, slots=True)
class SnapshotPayload:
    """``snapshot.create`` and ``snapshot.scheduled``."""

    include_memory_state: bool = False
    quiesce: bool = True
    replaces: str | None = None
    """A scheduled run's rotation: the scheduled snapshot it deletes once the new one exists."""

    def to_json(self) -> JsonObject:
        data: JsonObject = {
            "includeMemoryState": self.include_memory_state,
            "quiesce": self.quiesce,
        }
        if self.replaces is not None:
            data["replaces"] = self.replaces
        return data

    @classmethod
    def from_json(cls, data: JsonObject) -> SnapshotPayload:
        replaces = data.get("replaces")
        return cls(
            include_memory_state=bool(data.get("includeMemoryState", False)),
            quiesce=bool(data.get("quiesce", True)),
            replaces=replaces if isinstance(replaces, str) else None,
        )


@dataclass(frozen=True, slots=True)
class RestorePayload:
    """``snapshot.restore``: the VM configuration the snapshot's RAM state fits (issue 9,
    kind 3: the driver refuses a VM whose RAM size or machine type changed)."""

    vm_config: VmConfig | None = None

    def to_json(self) -> JsonObject:
        return {"vmConfig": self.vm_config.to_json() if self.vm_config else None}

    @classmethod
    def from_json(cls, data: JsonObject) -> RestorePayload:
        return cls(vm_config=VmConfig.from_json(data.get("vmConfig")))


@dataclass(frozen=True, slots=True)
class PowerPayload:
    """``vps.power``."""

    action: PowerAction
    force: bool = False

    def to_json(self) -> JsonObject:
        return {"action": self.action.value, "force": self.force}

    @classmethod
    def from_json(cls, data: JsonObject) -> PowerPayload:
        return cls(action=PowerAction(data["action"]), force=bool(data.get("force", False)))


JobPayload = SnapshotPayload | RestorePayload | PowerPayload | None

_CREATES = (JobType.SNAPSHOT_CREATE, JobType.SNAPSHOT_SCHEDULED)


def payload_of(job: Job) -> JobPayload:
    """The typed payload of ``job`` (None for a delete or expiry)."""
    if job.type in _CREATES:
        return SnapshotPayload.from_json(job.payload)
    if job.type is JobType.SNAPSHOT_RESTORE:
        return RestorePayload.from_json(job.payload)
    if job.type is JobType.VPS_POWER:
        return PowerPayload.from_json(job.payload)
    return None


def snapshot_payload(job: Job) -> SnapshotPayload:
    """The payload of a create or scheduled run; ``TypeError`` for another job type."""
    payload = payload_of(job)
    if not isinstance(payload, SnapshotPayload):
        raise TypeError(f"{job.type.value} job {job.id} has no snapshot payload")
    return payload


def restore_payload(job: Job) -> RestorePayload:
    payload = payload_of(job)
    if not isinstance(payload, RestorePayload):
        raise TypeError(f"{job.type.value} job {job.id} has no restore payload")
    return payload


def power_payload(job: Job) -> PowerPayload:
    payload = payload_of(job)
    if not isinstance(payload, PowerPayload):
        raise TypeError(f"{job.type.value} job {job.id} has no power payload")
    return payload
