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
    ├── VpsQueueFull            (vps_queue_full, 429 with Retry-After)
    ├── NodeUnavailable         (node_unavailable, 503 with Retry-After)
    └── HypervisorError         (hypervisor_unavailable; drivers raise this or VpsNotReady)
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
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions or {}
        if code is not None:
            self.code = code


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


class VpsQueueFull(DomainError):
    """The VPS has as many unfinished jobs as it may queue; retry once some have run."""

    code = "vps_queue_full"


class NodeUnavailable(DomainError):
    """The VPS's host agent is offline or its node is drained: no new work is queued there."""

    code = "node_unavailable"


class HypervisorError(DomainError):
    """The hypervisor could not do what was asked (a tool failed, a socket is gone)."""

    code = "hypervisor_unavailable"
