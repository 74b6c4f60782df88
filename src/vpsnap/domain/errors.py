"""The one error vocabulary of vpsnap.

Every failure a user can meet is a ``DomainError`` with a stable ``code``; the API turns it into
problem+json (status and title come from ``vpsnap.api.problems``), the SDK rebuilds it from
``code``. Codes are never renamed once released.

    DomainError
    ├── InvalidRequest          (invalid_request, with field errors)
    ├── InvalidCursor
    ├── Unauthorized
    ├── Forbidden               (extensions.requiredScopes)
    ├── NotFound                (vps_not_found, snapshot_not_found, job_not_found)
    ├── Conflict                (snapshot_name_taken, snapshot_limit_reached, ...)
    │   └── (hypervisor conditions retrying cannot change: disk_unusable, snapshot_ambiguous,
    │        vm_config_changed, memory_snapshot_unsupported, restore_incomplete)
    └── HypervisorError         (hypervisor_unavailable; drivers raise this or VpsNotReady)

``detail`` is what the tenant reads (problem documents, failed jobs): it names the customer's
objects only (VPS, snapshot, "disk 2 of web-1"), never host paths, sockets, processes or
command lines. ``log_detail`` is the operator's full account (paths, tool output), which goes to
the log with the request or job id and never into a problem document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class FieldError:
    pointer: str
    detail: str
    code: str


class DomainError(Exception):
    code: str = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        extensions: dict[str, Any] | None = None,
        code: str | None = None,
        log_detail: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions or {}
        if code is not None:
            self.code = code
        self.log_detail = log_detail
        """Operator-facing account (may hold host paths and tool output); logged, never shown."""


class InvalidRequest(DomainError):
    code = "invalid_request"

    def __init__(self, detail: str, errors: list[FieldError]) -> None:
        super().__init__(detail)
        self.errors = errors


class InvalidCursor(DomainError):
    code = "invalid_cursor"


class Unauthorized(DomainError):
    code = "unauthorized"


class Forbidden(DomainError):
    code = "forbidden"


class NotFound(DomainError):
    code = "not_found"


class VpsNotFound(NotFound):
    code = "vps_not_found"


class SnapshotNotFound(NotFound):
    code = "snapshot_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class Conflict(DomainError):
    code = "conflict"


class SnapshotNameTaken(Conflict):
    code = "snapshot_name_taken"


class SnapshotsNotIncluded(Conflict):
    code = "snapshots_not_included"


class SnapshotLimitReached(Conflict):
    code = "snapshot_limit_reached"


class SnapshotBusy(Conflict):
    code = "snapshot_busy"


class VpsNotReady(Conflict):
    code = "vps_not_ready"


class SnapshotSlotsInUse(Conflict):
    code = "snapshot_slots_in_use"


class IdempotencyKeyInUse(Conflict):
    code = "idempotency_key_in_use"


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"


class HypervisorError(DomainError):
    """The hypervisor could not do what was asked (a tool failed, a socket is gone)."""

    code = "hypervisor_unavailable"


# -- hypervisor conditions that need someone to act (issue 9: kinds 2, 3, 5) -------------------
# 409, not 503: retrying the same request without a change gives the same answer.


class DiskUnusable(Conflict):
    """A registered disk cannot be used: missing, not a qcow2 image, unreadable, or none."""

    code = "disk_unusable"


class SnapshotAmbiguous(Conflict):
    """The name matches more than one snapshot on a disk (made outside vpsnap), or, for a RAM
    restore, equals another snapshot's id there; vpsnap will not guess which one is meant."""

    code = "snapshot_ambiguous"


class VmConfigChanged(Conflict):
    """The VM no longer matches what the operation needs or what vpsnap has on record: another
    RAM size or machine type than the memory snapshot was taken with, a running VM that does not
    use the registered disks, a libvirt domain that is gone or whose definition changed."""

    code = "vm_config_changed"


class MemorySnapshotUnsupported(Conflict):
    """A snapshot or restore with RAM state would not cover every writable device of the VM
    (``extensions.devices`` names them by their guest-visible ids)."""

    code = "memory_snapshot_unsupported"


class RestoreIncomplete(Conflict):
    """A restore stopped part-way after changing something; ``detail`` and ``extensions`` say
    which steps took effect and what state the VM was left in."""

    code = "restore_incomplete"
