"""The error catalogue: every problem code vpsnap can answer with, and per code its HTTP status,
fixed title, whether retrying the same request can help, and the text of its ``/errors/{code}``
page. It is the one source: the problem+json mapping (``vpsnap.api.problems``), the ``/errors``
pages, the OpenAPI examples and failed jobs' problems all read it, and every ``DomainError``
class names one of its codes (``vpsnap.domain.errors`` refuses to define one that does not).

Adding a code is one entry here plus two lines elsewhere:

1. Add ``"<code>": ProblemKind(status, title, explanation, retryable=...)`` below. The rule of
   contract section 3: a 5xx means "retrying may help" (``retryable=True``); a condition that
   needs someone to act (a user, an operator) gets a 4xx code. Codes are never renamed once
   released.
2. Raise it: a ``DomainError`` subclass in ``vpsnap/domain/errors.py`` with ``code = "<code>"``
   (or ``DomainError(detail, code="<code>")`` for a one-off).
3. Add the SDK's exception in ``vpsnap/client/errors.py`` (the SDK imports nothing of the server
   and keeps its own mapping) and a row in the error table of ``docs/api.md``.

``tests/api/test_error_catalogue.py`` fails until all of these agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vpsnap.domain.redaction import tenant_safe

if TYPE_CHECKING:
    from vpsnap.domain.errors import DomainError


@dataclass(frozen=True, slots=True)
class ProblemKind:
    """One code of the catalogue.

    ``status`` is the HTTP status; ``title`` is the problem's fixed ``title``; ``explanation``
    is the page at ``/errors/{code}``; ``retryable`` says whether sending the same request
    again later can succeed without anyone acting (the SDK retries exactly these).
    """

    status: int
    title: str
    explanation: str
    retryable: bool


CATALOGUE: dict[str, ProblemKind] = {
    "invalid_request": ProblemKind(
        400,
        "Validation failed",
        "The request failed validation; `errors` lists each field with a JSON pointer "
        "(`/name`, `/query/limit`) and a field code.",
        retryable=False,
    ),
    "invalid_cursor": ProblemKind(
        400,
        "Invalid cursor",
        "The `cursor` is not one this server handed out. Start again without one.",
        retryable=False,
    ),
    "invalid_json": ProblemKind(
        400, "Malformed JSON", "The request body is not valid JSON.", retryable=False
    ),
    "host_not_allowed": ProblemKind(
        400,
        "Host not allowed",
        "The request's `Host` header names a host this server does not serve. The operator "
        "lists the served names in `VPSNAP_ALLOWED_HOSTS`.",
        retryable=False,
    ),
    "unauthorized": ProblemKind(
        401,
        "Authentication required",
        "Send a valid API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`. "
        "Unknown, expired and revoked keys all answer this.",
        retryable=False,
    ),
    "forbidden": ProblemKind(
        403,
        "Missing scope",
        "The credential is valid but lacks a scope; `extensions.requiredScopes` lists it.",
        retryable=False,
    ),
    "not_found": ProblemKind(
        404, "Not found", "There is no resource at this path.", retryable=False
    ),
    "csrf_failed": ProblemKind(
        403,
        "Cross-site request refused",
        "A request authenticated by the `hostup_session` cookie that changes state must come "
        "from vpsnap's own pages: same-origin `Origin` (or `Sec-Fetch-Site: same-origin`), and "
        "the form's CSRF token in the panel. Scripts should use an API key instead.",
        retryable=False,
    ),
    "vps_not_found": ProblemKind(
        404,
        "VPS not found",
        "No VPS with this id exists in the caller's account.",
        retryable=False,
    ),
    "snapshot_not_found": ProblemKind(
        404,
        "Snapshot not found",
        "The VPS has no snapshot with this name (or it is no longer on the VPS's disks).",
        retryable=False,
    ),
    "job_not_found": ProblemKind(
        404,
        "Job not found",
        "No job with this id exists in the caller's account.",
        retryable=False,
    ),
    "method_not_allowed": ProblemKind(
        405,
        "Method not allowed",
        "The path exists but does not accept this method; the `Allow` header lists those it does.",
        retryable=False,
    ),
    "conflict": ProblemKind(
        409, "Conflict", "The request conflicts with the current state.", retryable=False
    ),
    "snapshot_name_taken": ProblemKind(
        409,
        "Snapshot name taken",
        "Snapshot names are unique per VPS, ignoring case. Choose another name.",
        retryable=False,
    ),
    "snapshots_not_included": ProblemKind(
        409,
        "Snapshots not included",
        "The VPS's plan has no snapshot slots. Add slots through the upgrade endpoints.",
        retryable=False,
    ),
    "snapshot_limit_reached": ProblemKind(
        409,
        "Snapshot limit reached",
        "Every snapshot slot is used. Delete a snapshot or add slots, then try again.",
        retryable=False,
    ),
    "snapshot_busy": ProblemKind(
        409,
        "Snapshot busy",
        "The snapshot is being created or deleted; wait for that job, then decide again.",
        retryable=False,
    ),
    "vps_not_ready": ProblemKind(
        409,
        "VPS not ready",
        "The VPS cannot take this action now (service not active, or its disks are in use).",
        retryable=False,
    ),
    "snapshot_slots_in_use": ProblemKind(
        409,
        "Snapshot slots in use",
        "The new slot count is below the snapshots in use. Delete snapshots first.",
        retryable=False,
    ),
    "idempotency_key_in_use": ProblemKind(
        409,
        "Idempotency key in use",
        "The first request with this Idempotency-Key is still being handled. Retry the same "
        "request shortly: it will get that request's answer.",
        retryable=True,
    ),
    "idempotency_key_reused": ProblemKind(
        422,
        "Idempotency key reused",
        "This Idempotency-Key was used with a different request. Use a new key.",
        retryable=False,
    ),
    "payload_too_large": ProblemKind(
        413, "Payload too large", "The request body is too large.", retryable=False
    ),
    "unsupported_media_type": ProblemKind(
        415,
        "Unsupported media type",
        "Send the request body as `application/json`.",
        retryable=False,
    ),
    "vps_queue_full": ProblemKind(
        429,
        "VPS queue full",
        "The VPS has as many unfinished jobs as it may queue (`VPSNAP_MAX_JOBS_PER_VPS`). Wait "
        "`Retry-After` seconds, or for the queued jobs to finish, and retry.",
        retryable=True,
    ),
    "rate_limited": ProblemKind(
        429,
        "Rate limited",
        "Too many requests. Wait `Retry-After` seconds and retry.",
        retryable=True,
    ),
    "internal_error": ProblemKind(
        500,
        "Internal error",
        "Something failed on our side. Retry later; quote the requestId when asking for help.",
        retryable=True,
    ),
    "billing_unavailable": ProblemKind(
        503,
        "Billing unavailable",
        "The billing system did not confirm the change; nothing was changed. Retry later.",
        retryable=True,
    ),
    "node_unavailable": ProblemKind(
        503,
        "Node unavailable",
        "The host this VPS runs on is not reachable right now (its agent has not reported "
        "recently) or is in maintenance (drained), so no new work is accepted for it. Jobs "
        "already queued wait for it; retry after `Retry-After` seconds.",
        retryable=True,
    ),
    "database_unavailable": ProblemKind(
        503,
        "Database unavailable",
        "vpsnap's database did not answer in time (it is restarting, unreachable, or another "
        "writer held it too long), so the request was not carried out. Retry after "
        "`Retry-After` seconds.",
        retryable=True,
    ),
    "hypervisor_unavailable": ProblemKind(
        503,
        "Hypervisor unavailable",
        "The hypervisor could not perform the operation. Retry later.",
        retryable=True,
    ),
}

# -- hypervisor conditions that need someone to act (issue 9: kinds 2, 3, 5) -------------------
CATALOGUE |= {
    "disk_unusable": ProblemKind(
        409,
        "Disk unusable",
        "A disk of the VPS cannot be used for snapshots: the image is missing, is not a qcow2 "
        "image, or cannot be read. Retrying does not help; the provider must fix the disk.",
        retryable=False,
    ),
    "snapshot_ambiguous": ProblemKind(
        409,
        "Snapshot ambiguous",
        "More than one snapshot on a disk of the VPS carries this name (made outside vpsnap), "
        "or, for a restore with RAM state, the name equals another snapshot's id on the disk. "
        "vpsnap will not guess which one is meant. Retrying does not help; the provider must "
        "rename or remove the extra snapshot (or stop the VM and restore the disks only).",
        retryable=False,
    ),
    "vm_config_changed": ProblemKind(
        409,
        "VM configuration changed",
        "The VM no longer matches what the operation needs: its RAM size or machine type differs "
        "from the one the memory snapshot was taken with, or the running VM (or libvirt domain) "
        "is not the one registered for the VPS. Nothing was changed. Run the VM with the "
        "snapshot's configuration, or stop it and restore the disks only.",
        retryable=False,
    ),
    "memory_snapshot_unsupported": ProblemKind(
        409,
        "Memory snapshot unsupported",
        "A snapshot or restore with RAM state must cover every writable device of the VM, and "
        "this VM has writable devices that are not among the VPS's snapshottable disks "
        "(`extensions.devices` names them). Nothing was changed. A disk-only snapshot is "
        "possible; it covers the VPS's registered disks only.",
        retryable=False,
    ),
    "restore_incomplete": ProblemKind(
        409,
        "Restore incomplete",
        "The restore stopped part-way after changing something. `detail` and `extensions` say "
        "which steps took effect and in which power state the VM was left (never running on "
        "half-restored state). Check the VM before retrying.",
        retryable=False,
    ),
}


# -- operations (issue 12) ----------------------------------------------------------------------
CATALOGUE |= {
    "webhook_not_found": ProblemKind(
        404,
        "Webhook not found",
        "No webhook endpoint with this id exists in the caller's account.",
        retryable=False,
    ),
    "insufficient_storage": ProblemKind(
        507,
        "Insufficient storage",
        "The filesystem holding the VPS's disks would run too low on free space if this "
        "snapshot were taken (a snapshot with RAM state writes the whole RAM). Nothing was "
        "written. It may succeed later, once expiring snapshots free space; sooner if you "
        "delete snapshots or the operator frees space.",
        retryable=True,
    ),
}


def kind_of(code: str) -> ProblemKind:
    """The catalogue entry of ``code``; an unknown code is answered as ``internal_error``."""
    return CATALOGUE.get(code, CATALOGUE["internal_error"])


def error_summary(error: DomainError) -> dict[str, Any]:
    """The parts of a problem that do not depend on the request (stored with failed jobs)."""
    code = error.code if error.code in CATALOGUE else "internal_error"
    kind = CATALOGUE[code]
    summary: dict[str, Any] = {
        "code": code,
        "title": kind.title,
        "status": kind.status,
        # Drivers keep host internals in ``log_detail``; this is the last line of defence for
        # anything that slipped through (docs/api.md, "Errors").
        "detail": tenant_safe(error.detail),
    }
    field_errors = error.field_errors
    if field_errors is not None:
        summary["errors"] = [
            {"pointer": e.pointer, "detail": e.detail, "code": e.code} for e in field_errors
        ]
    if error.extensions:
        summary["extensions"] = error.extensions
    return summary
