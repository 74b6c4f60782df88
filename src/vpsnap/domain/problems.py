"""The catalogue of problem codes: HTTP status, fixed title and a page of explanation each.

Shared by the API (problem+json and the ``/errors/{code}`` pages) and by job failures, which
store the problem of the error that ended them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vpsnap.domain.errors import DomainError, InvalidRequest


@dataclass(frozen=True, slots=True)
class ProblemKind:
    status: int
    title: str
    explanation: str


CATALOGUE: dict[str, ProblemKind] = {
    "invalid_request": ProblemKind(
        400, "Validation failed", "The request failed validation; `errors` lists each field."
    ),
    "invalid_cursor": ProblemKind(
        400, "Invalid cursor", "The `cursor` is not one this server handed out. Start again."
    ),
    "invalid_json": ProblemKind(400, "Malformed JSON", "The request body is not valid JSON."),
    "unauthorized": ProblemKind(
        401,
        "Authentication required",
        "Send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
    ),
    "forbidden": ProblemKind(
        403,
        "Missing scope",
        "The credential is valid but lacks a scope; `extensions.requiredScopes` lists it.",
    ),
    "not_found": ProblemKind(404, "Not found", "There is no resource at this path."),
    "vps_not_found": ProblemKind(
        404, "VPS not found", "No VPS with this id exists in the caller's account."
    ),
    "snapshot_not_found": ProblemKind(
        404, "Snapshot not found", "The VPS has no snapshot with this name."
    ),
    "job_not_found": ProblemKind(
        404, "Job not found", "No job with this id exists in the caller's account."
    ),
    "method_not_allowed": ProblemKind(
        405, "Method not allowed", "The path exists but does not accept this method."
    ),
    "snapshot_name_taken": ProblemKind(
        409, "Snapshot name taken", "Snapshot names are unique per VPS, ignoring case."
    ),
    "snapshots_not_included": ProblemKind(
        409,
        "Snapshots not included",
        "The VPS's plan has no snapshot slots. Add slots through the upgrade endpoints.",
    ),
    "snapshot_limit_reached": ProblemKind(
        409,
        "Snapshot limit reached",
        "Every snapshot slot is used. Delete a snapshot or add slots, then try again.",
    ),
    "snapshot_busy": ProblemKind(
        409, "Snapshot busy", "The snapshot is being created or deleted; wait for that job."
    ),
    "vps_not_ready": ProblemKind(
        409,
        "VPS not ready",
        "The VPS cannot take this action now (service not active, or its disks are in use).",
    ),
    "snapshot_slots_in_use": ProblemKind(
        409, "Snapshot slots in use", "The new slot count is below the snapshots in use."
    ),
    "conflict": ProblemKind(409, "Conflict", "The request conflicts with the current state."),
    "idempotency_key_reused": ProblemKind(
        422,
        "Idempotency key reused",
        "This Idempotency-Key was used with a different request. Use a new key.",
    ),
    "idempotency_key_in_use": ProblemKind(
        409, "Idempotency key in use", "The first request with this key is still being handled."
    ),
    "payload_too_large": ProblemKind(413, "Payload too large", "The request body is too large."),
    "unsupported_media_type": ProblemKind(
        415, "Unsupported media type", "Send the request body as `application/json`."
    ),
    "vps_queue_full": ProblemKind(
        429,
        "VPS queue full",
        "The VPS has as many unfinished jobs as it may queue (`VPSNAP_MAX_JOBS_PER_VPS`). Wait "
        "`Retry-After` seconds, or for the queued jobs to finish, and retry.",
    ),
    "rate_limited": ProblemKind(
        429, "Rate limited", "Too many requests. Wait `Retry-After` seconds and retry."
    ),
    "internal_error": ProblemKind(
        500, "Internal error", "Something failed on our side. Retry later; quote the requestId."
    ),
    "billing_unavailable": ProblemKind(
        503,
        "Billing unavailable",
        "The billing system did not confirm the change; nothing was changed. Retry later.",
    ),
    "node_unavailable": ProblemKind(
        503,
        "Node unavailable",
        "The host this VPS runs on is not reachable right now (its agent has not reported "
        "recently) or is in maintenance (drained), so no new work is accepted for it. Jobs "
        "already queued wait for it; retry after `Retry-After` seconds.",
    ),
    "hypervisor_unavailable": ProblemKind(
        503,
        "Hypervisor unavailable",
        "The hypervisor could not perform the operation. Retry later.",
    ),
}


def kind_of(code: str) -> ProblemKind:
    return CATALOGUE.get(code, CATALOGUE["internal_error"])


def error_summary(error: DomainError) -> dict[str, Any]:
    """The parts of a problem that do not depend on the request (stored with failed jobs)."""
    kind = kind_of(error.code)
    summary: dict[str, Any] = {
        "code": error.code,
        "title": kind.title,
        "status": kind.status,
        "detail": error.detail,
    }
    if isinstance(error, InvalidRequest):
        summary["errors"] = [
            {"pointer": e.pointer, "detail": e.detail, "code": e.code} for e in error.errors
        ]
    if error.extensions:
        summary["extensions"] = error.extensions
    return summary
