"""Every error the SDK raises, rebuilt from the problem document's ``code``.

    VpsnapError                    status, code, title, detail, errors, extensions, request_id
    ├── ConfigurationError         no API key, a bad URL (raised before any request)
    ├── ConnectionFailed           no answer after the retries (__cause__: the httpx error)
    ├── UnexpectedResponse         an answer the SDK cannot read (not vpsnap, a proxy page)
    ├── InvalidRequest             400: invalid_request (field_errors), invalid_json, invalid_cursor
    │   ├── HostNotAllowed         400: the server does not serve the URL's host name
    │   └── IdempotencyKeyReused   422
    ├── AmbiguousVps               a name or IP that matches more than one VPS
    ├── Unauthorized               401
    ├── Forbidden                  403 (required_scopes)
    │   └── CsrfFailed             403 csrf_failed: a session-cookie change not from our pages
    ├── NotFound                   404 not_found
    │   ├── VpsNotFound
    │   ├── SnapshotNotFound
    │   ├── JobNotFound
    │   └── WebhookNotFound
    ├── MethodNotAllowed           405
    ├── PayloadTooLarge            413
    ├── UnsupportedMediaType       415
    ├── Conflict                   409 conflict
    │   ├── SnapshotNameTaken
    │   ├── SnapshotsNotIncluded
    │   ├── SnapshotLimitReached
    │   ├── SnapshotBusy
    │   ├── VpsNotReady
    │   ├── SnapshotSlotsInUse
    │   ├── IdempotencyKeyInUse
    │   ├── DiskUnusable           a disk of the VPS is missing, not qcow2 or unreadable
    │   ├── SnapshotAmbiguous      the name matches several snapshots on a disk
    │   ├── VmConfigChanged        the VM differs from the snapshot's or from its registration
    │   ├── MemorySnapshotUnsupported  RAM state would not cover every writable device
    │   ├── RestoreIncomplete      a restore stopped part-way (extensions say what took effect)
    │   └── CannotMakeRoom         create_safely could not free or buy a slot (reason_code, hint)
    ├── RateLimited                429 (retry_after), after the SDK's own retries
    │   └── VpsQueueFull           429: the VPS has as many unfinished jobs as it may queue
    ├── ServerError                5xx, after the SDK's own retries
    │   ├── BillingUnavailable     503
    │   ├── HypervisorUnavailable  503
    │   ├── NodeUnavailable        503: the VPS's host is offline or drained (retry_after)
    │   ├── DatabaseUnavailable    503: the server's database did not answer (retry_after)
    │   └── InsufficientStorage    507: the VPS's data store would run too low on free space
    ├── JobFailed                  the job ended ``failed``: its problem, and ``error`` rebuilt
    └── JobTimeout                 the job did not end within the wait's timeout

Unknown codes map by status: 400 InvalidRequest, 401, 403, 404 NotFound, 409 Conflict, 429,
5xx ServerError, anything else VpsnapError. Branch on classes or ``code``, never on ``detail``.

The server's error catalogue (its ``/errors`` pages) is the source of the codes; this module
keeps its own mapping so that the SDK imports nothing of the server, and a parity test
(tests/api/test_error_catalogue.py) fails when a server code has no exception here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from vpsnap.client.jobs import Job


@dataclass(frozen=True, slots=True)
class FieldError:
    """One field of an ``invalid_request``: ``pointer`` is ``/name`` or ``/query/limit``."""

    pointer: str
    detail: str
    code: str


class VpsnapError(Exception):
    code: str = "error"
    """The class's code; an instance carries the server's (an unknown code keeps its own)."""

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status: int | None = None,
        title: str | None = None,
        request_id: str | None = None,
        errors: Sequence[FieldError] = (),
        extensions: Mapping[str, Any] | None = None,
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.status = status
        self.title = title
        self.request_id = request_id
        self.field_errors: tuple[FieldError, ...] = tuple(errors)
        self.extensions: Mapping[str, Any] = extensions or {}
        self.problem: Mapping[str, Any] = problem or {}

    def __str__(self) -> str:
        return self.detail

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked to wait before sending this again (``extensions.retryAfter``:
        rate_limited, vps_queue_full, node_unavailable, database_unavailable); None when it
        did not say."""
        value = self.extensions.get("retryAfter")
        return float(value) if isinstance(value, int | float) else None


class ConfigurationError(VpsnapError):
    code = "configuration_error"


class ConnectionFailed(VpsnapError):
    code = "connection_failed"


class UnexpectedResponse(VpsnapError):
    code = "unexpected_response"


class InvalidRequest(VpsnapError):
    code = "invalid_request"


class IdempotencyKeyReused(InvalidRequest):
    code = "idempotency_key_reused"


class HostNotAllowed(InvalidRequest):
    """The server refused the URL's host name (its operator lists the names it serves)."""

    code = "host_not_allowed"


class MethodNotAllowed(VpsnapError):
    code = "method_not_allowed"


class PayloadTooLarge(VpsnapError):
    code = "payload_too_large"


class UnsupportedMediaType(VpsnapError):
    code = "unsupported_media_type"


class AmbiguousVps(VpsnapError):
    code = "ambiguous_vps"


class Unauthorized(VpsnapError):
    code = "unauthorized"


class Forbidden(VpsnapError):
    code = "forbidden"

    @property
    def required_scopes(self) -> tuple[str, ...]:
        return tuple(self.extensions.get("requiredScopes", ()))


class CsrfFailed(Forbidden):
    """A change authenticated by the dashboard's session cookie that did not come from the
    dashboard's own pages. Scripts should authenticate with an API key instead."""

    code = "csrf_failed"


class NotFound(VpsnapError):
    code = "not_found"


class VpsNotFound(NotFound):
    code = "vps_not_found"


class SnapshotNotFound(NotFound):
    code = "snapshot_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class Conflict(VpsnapError):
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


# -- hypervisor conditions that need someone to act (issue 9): 409, never retried ----------------


class DiskUnusable(Conflict):
    code = "disk_unusable"


class SnapshotAmbiguous(Conflict):
    code = "snapshot_ambiguous"


class VmConfigChanged(Conflict):
    code = "vm_config_changed"


class MemorySnapshotUnsupported(Conflict):
    """``devices`` names the writable devices a snapshot with RAM state would not cover."""

    code = "memory_snapshot_unsupported"

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.extensions.get("devices", ()))


class RestoreIncomplete(Conflict):
    """``extensions`` say what took effect (``disksRestored``, ``memoryRestored``) and the power
    state the VM was left in (``powerStateAfter``)."""

    code = "restore_incomplete"


class CannotMakeRoom(Conflict):
    """``create_safely`` found no free slot and could not make one as asked.

    ``reason_code`` says why (``snapshot_limit_reached``, ``snapshots_not_included``,
    ``max_slots_reached``, ``slots_not_sold``, ``all_snapshots_busy``, ``declined`` when the
    ``confirm`` callback said no, or the config gate's code); ``why`` is the first part of the
    message, ``hint`` what the user can do.
    """

    code = "cannot_make_room"

    def __init__(self, why: str, hint: str, *, reason_code: str, **kwargs: Any) -> None:
        super().__init__(f"{why} {hint}", **kwargs)
        self.reason_code = reason_code
        self.why = why
        self.hint = hint


class RateLimited(VpsnapError):
    code = "rate_limited"


class VpsQueueFull(RateLimited):
    """The VPS has as many unfinished jobs as it may queue; retry after ``retry_after``."""

    code = "vps_queue_full"


class ServerError(VpsnapError):
    code = "internal_error"


class BillingUnavailable(ServerError):
    code = "billing_unavailable"


class HypervisorUnavailable(ServerError):
    code = "hypervisor_unavailable"


class NodeUnavailable(ServerError):
    """The VPS's host is offline or in maintenance (drained): nothing was queued; retry after
    ``retry_after`` seconds."""

    code = "node_unavailable"


class DatabaseUnavailable(ServerError):
    """The server's database did not answer in time: nothing was done; retry after
    ``retry_after`` seconds (the SDK's own retries do)."""

    code = "database_unavailable"


class WebhookNotFound(NotFound):
    code = "webhook_not_found"


class InsufficientStorage(ServerError):
    """507: the snapshot would leave the data store below the operator's free-space floor;
    nothing was written. Retried like any 5xx; it succeeds once space is freed."""

    code = "insufficient_storage"


class JobFailed(VpsnapError):
    """The job ended ``failed``. ``job`` is its last state; ``error`` is its problem document
    rebuilt as an exception (e.g. ``SnapshotNameTaken``), so callers can branch on it."""

    code = "job_failed"

    def __init__(self, job: Job[Any]) -> None:
        problem = job.error or {}
        self.job = job
        self.error = error_from_problem(problem, status=None, request_id=None)
        super().__init__(
            f"job {job.job_id} ({job.type}) failed: {self.error.detail}",
            code=self.error.code,
            status=self.error.status,
            title=self.error.title,
            request_id=self.error.request_id,
            errors=self.error.field_errors,
            extensions=self.error.extensions,
            problem=problem,
        )


class JobTimeout(VpsnapError):
    """The job was still running when the wait's timeout passed (it goes on on the server)."""

    code = "job_timeout"

    def __init__(self, job: Job[Any], timeout: float) -> None:
        super().__init__(
            f"job {job.job_id} ({job.type}) is still {job.status} after {timeout:g} s; "
            f"it goes on on the server: wait again with its id"
        )
        self.job = job
        self.timeout = timeout


_BY_CODE: dict[str, type[VpsnapError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        IdempotencyKeyReused,
        HostNotAllowed,
        MethodNotAllowed,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unauthorized,
        Forbidden,
        CsrfFailed,
        NotFound,
        VpsNotFound,
        SnapshotNotFound,
        JobNotFound,
        Conflict,
        SnapshotNameTaken,
        SnapshotsNotIncluded,
        SnapshotLimitReached,
        SnapshotBusy,
        VpsNotReady,
        SnapshotSlotsInUse,
        IdempotencyKeyInUse,
        DiskUnusable,
        SnapshotAmbiguous,
        VmConfigChanged,
        MemorySnapshotUnsupported,
        RestoreIncomplete,
        RateLimited,
        VpsQueueFull,
        ServerError,
        BillingUnavailable,
        HypervisorUnavailable,
        NodeUnavailable,
        DatabaseUnavailable,
        WebhookNotFound,
        InsufficientStorage,
    )
}
_BY_CODE |= {"invalid_json": InvalidRequest, "invalid_cursor": InvalidRequest}

_BY_STATUS: dict[int, type[VpsnapError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: InvalidRequest,
    429: RateLimited,
}


def error_class(code: str | None, status: int | None) -> type[VpsnapError]:
    if code in _BY_CODE:
        return _BY_CODE[code]
    if status is not None and status >= 500:
        return ServerError
    return _BY_STATUS.get(status or 0, VpsnapError)


def error_from_problem(
    problem: Mapping[str, Any], *, status: int | None, request_id: str | None
) -> VpsnapError:
    """An RFC 9457 problem document (an error answer, or a failed job's ``error``)."""
    code = problem.get("code")
    code = code if isinstance(code, str) else None
    raw_status = problem.get("status")
    status = raw_status if isinstance(raw_status, int) else status
    cls = error_class(code, status)
    fields = [
        FieldError(str(e.get("pointer", "")), str(e.get("detail", "")), str(e.get("code", "")))
        for e in problem.get("errors") or ()
        if isinstance(e, Mapping)
    ]
    extensions = problem.get("extensions")
    title = problem.get("title")
    detail = problem.get("detail") or title or f"HTTP {status}"
    return cls(
        str(detail),
        code=code or cls.code,
        status=status,
        title=title if isinstance(title, str) else None,
        request_id=str(problem.get("requestId") or request_id or "") or None,
        errors=fields,
        extensions=extensions if isinstance(extensions, Mapping) else None,
        problem=problem,
    )


def error_from_response(response: httpx.Response) -> VpsnapError:
    request_id = response.headers.get("X-Request-Id")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, Mapping):
        # Not one of ours (a proxy's HTML page, an empty 502): keep what can be said.
        body = {"detail": f"HTTP {response.status_code} {response.reason_phrase}".strip()}
    error = error_from_problem(body, status=response.status_code, request_id=request_id)
    # A body without it (a proxy's 503, an older server) may still say it in the header.
    if "retryAfter" not in error.extensions:
        retry_after = response.headers.get("Retry-After", "")
        if retry_after.isdigit():
            error.extensions = {**error.extensions, "retryAfter": int(retry_after)}
    return error
