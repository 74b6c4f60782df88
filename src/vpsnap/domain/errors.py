"""The one error vocabulary of vpsnap.

Every failure a user can meet is a ``DomainError`` whose ``code`` is an entry of the error
catalogue (``vpsnap.domain.problems.CATALOGUE``: status, title, retryable, page text); the API
turns it into problem+json, the SDK rebuilds it from ``code``. A subclass whose code is not in
the catalogue cannot be defined (``__init_subclass__`` refuses it at import). Codes are never
renamed once released.

    DomainError                 (internal_error)
    ├── InvalidRequest          (invalid_request, with field errors)
    ├── InvalidCursor
    ├── InvalidJson
    ├── HostNotAllowed
    ├── Unauthorized
    ├── Forbidden               (extensions.requiredScopes)
    │   └── CsrfFailed          (csrf_failed: a cookie request not from our own pages)
    ├── NotFound                (not_found)
    │   ├── VpsNotFound
    │   ├── SnapshotNotFound
    │   └── JobNotFound
    ├── MethodNotAllowed
    ├── Conflict                (conflict)
    │   ├── SnapshotNameTaken, SnapshotsNotIncluded, SnapshotLimitReached, SnapshotBusy,
    │   │   VpsNotReady, SnapshotSlotsInUse, IdempotencyKeyInUse
    │   ├── DiskUnusable, SnapshotAmbiguous, VmConfigChanged, MemorySnapshotUnsupported,
    │   │   RestoreIncomplete   (hypervisor conditions retrying cannot change)
    │   ├── DiskAlreadyRegistered   (operator: a disk file already belongs to a VPS)
    │   └── DataDirInUse            (operator: another server holds the data dir)
    ├── IdempotencyKeyReused
    ├── PayloadTooLarge
    ├── UnsupportedMediaType
    ├── RateLimited             (extensions.retryAfter)
    ├── VpsQueueFull            (vps_queue_full, 429 with Retry-After)
    ├── BillingUnavailable
    ├── NodeUnavailable         (node_unavailable, 503 with Retry-After)
    ├── DatabaseUnavailable     (database_unavailable, 503 with Retry-After; the store raises it)
    ├── HypervisorError         (hypervisor_unavailable; drivers raise this or VpsNotReady)
    └── ConfigurationError      (operator: settings or files that cannot work; CLI only)
        ├── BillingConfigError
        ├── ProcessRefused      (operator: a scale-out process that cannot start as configured)
        └── CapacityConfigError

The operator errors are raised by ``vpsnap admin``/``serve`` and printed by the CLI; they reuse
generic codes so that they would answer sensibly should one ever reach HTTP.

``detail`` is what the tenant reads (problem documents, failed jobs): it names the customer's
objects only (VPS, snapshot, "disk 2 of web-1"), never host paths, sockets, processes or
command lines. ``log_detail`` is the operator's full account (paths, tool output), which goes to
the log with the request or job id and never into a problem document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vpsnap.domain.problems import CATALOGUE, ProblemKind


@dataclass(frozen=True, slots=True)
class FieldError:
    pointer: str
    detail: str
    code: str


class DomainError(Exception):
    code: str = "internal_error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.code not in CATALOGUE:
            raise TypeError(
                f"{cls.__qualname__}.code = {cls.code!r} is not in the error catalogue: add it "
                "to CATALOGUE in vpsnap/domain/problems.py (see the steps at its top)"
            )

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

    @property
    def kind(self) -> ProblemKind:
        """This error's catalogue entry (``internal_error``'s for a code it does not have)."""
        return CATALOGUE.get(self.code, CATALOGUE["internal_error"])

    @property
    def field_errors(self) -> tuple[FieldError, ...] | None:
        """The per-field errors of an ``invalid_request``; None for other codes."""
        return None


class InvalidRequest(DomainError):
    code = "invalid_request"

    def __init__(self, detail: str, errors: list[FieldError]) -> None:
        super().__init__(detail)
        self.errors = errors

    @property
    def field_errors(self) -> tuple[FieldError, ...]:
        return tuple(self.errors)


class InvalidCursor(DomainError):
    code = "invalid_cursor"


class InvalidJson(DomainError):
    code = "invalid_json"


class HostNotAllowed(DomainError):
    code = "host_not_allowed"


class Unauthorized(DomainError):
    code = "unauthorized"


class Forbidden(DomainError):
    code = "forbidden"


class CsrfFailed(Forbidden):
    """A cookie-authenticated request that changes state did not prove it came from our own
    pages (Origin / Sec-Fetch-Site, and the form token in the panel)."""

    code = "csrf_failed"


class NotFound(DomainError):
    code = "not_found"


class VpsNotFound(NotFound):
    code = "vps_not_found"


class SnapshotNotFound(NotFound):
    code = "snapshot_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class MethodNotAllowed(DomainError):
    code = "method_not_allowed"


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


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"


class RateLimited(DomainError):
    """A rate limit is used up; ``retry_after`` is in whole seconds (≥ 1)."""

    code = "rate_limited"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, extensions={"retryAfter": retry_after})
        self.retry_after = retry_after


class BillingUnavailable(DomainError):
    """The billing system did not confirm a capacity change; nothing was applied."""

    code = "billing_unavailable"


class NodeUnavailable(DomainError):
    """The VPS's host agent is offline or its node is drained: no new work is queued there."""

    code = "node_unavailable"


class DatabaseUnavailable(DomainError):
    """The store could not be reached, or a statement met a lock it could not get in time,
    before anything was committed: nothing took effect and the same request may succeed later.

    Raised by the store (``vpsnap.store.sql.Store.transaction``), never by services. A failure
    while committing a write is *not* this error: its outcome is unknown, so it stays an
    ``internal_error``.
    """

    code = "database_unavailable"

    def __init__(self, detail: str, *, retry_after: int, log_detail: str | None = None) -> None:
        super().__init__(detail, extensions={"retryAfter": retry_after}, log_detail=log_detail)


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


# -- operator errors (CLI) -------------------------------------------------------------------


class DiskAlreadyRegistered(Conflict):
    """A disk file given to ``vps add``/``import-libvirt`` already belongs to a VPS (or is
    given twice). Its detail names the other VPS: it is only ever shown to the operator."""


class DataDirInUse(Conflict):
    """Another vpsnap server holds the data dir's lock."""


class ConfigurationError(DomainError):
    """Settings or an operator's file that cannot work; raised at start-up, printed by the CLI."""


class BillingConfigError(ConfigurationError):
    """The billing webhook settings cannot work (no secret, not an http(s) URL, bad timeout)."""


class ProcessRefused(ConfigurationError):
    """A scale-out process cannot start as configured: SQLite instead of PostgreSQL, a database
    schema older or newer than this vpsnap, a node another agent already serves."""


class CapacityConfigError(ConfigurationError):
    """The capacity file is missing, not TOML, or not a valid configuration."""


# -- operations (issue 12) -----------------------------------------------------------------------


class InsufficientStorage(DomainError):
    """The data store of the VPS's disks would fall below the free-space floor
    (``vpsnap.domain.storage``): refused before anything is written."""

    code = "insufficient_storage"


class WebhookNotFound(NotFound):
    code = "webhook_not_found"
