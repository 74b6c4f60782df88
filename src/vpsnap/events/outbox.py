"""The webhook outbox: events become messages in the transaction of the change they report.

One message per (event, subscribed endpoint) is inserted next to the state change, so a
committed change always has its messages (a crash before delivery loses none: the dispatcher
finds them after a restart) and a rolled-back one has none. ``vpsnap.events.delivery`` sends
them. Payloads follow the Standard Webhooks shape ``{"type", "timestamp", "data"}``
(docs/webhooks.md lists every event's ``data``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vpsnap.domain.clock import format_timestamp
from vpsnap.domain.ids import new_id
from vpsnap.domain.model import Job, JobStatus, JobType, Snapshot, Vps
from vpsnap.domain.ports import Transaction
from vpsnap.domain.webhooks import (
    MessageState,
    WebhookEndpoint,
    WebhookEventType,
    WebhookMessage,
)

Event = tuple[str, dict[str, Any]]
"""An event type and its ``data``."""


def _time(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment is not None else None


def job_data(job: Job) -> dict[str, Any]:
    """A job as ``GET /api/jobs/{id}`` shows it (``error`` without the request's members)."""
    return {
        "jobId": job.id,
        "type": job.type.value,
        "status": job.status.value,
        "progress": job.progress,
        "vpsId": job.vps_id,
        "snapshotName": job.snapshot_name,
        "result": job.result,
        "error": job.error,
        "createdAt": _time(job.created_at),
        "startedAt": _time(job.started_at),
        "finishedAt": _time(job.finished_at),
        "requestId": job.request_id,
        "createdBy": job.created_by.as_json() if job.created_by else None,
    }


def snapshot_data(snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot as ``GET /api/v2/vps/{id}/snapshots`` lists it."""
    return {
        "name": snapshot.name,
        "description": snapshot.description,
        "createdAt": _time(snapshot.created_at),
        "expiresAt": _time(snapshot.expires_at),
        "includesMemoryState": snapshot.includes_memory_state,
        "parentName": snapshot.parent_name,
        "status": snapshot.status.value,
        "origin": snapshot.origin.value,
        "consistency": snapshot.consistency.value,
    }


def payload(event_type: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": event_type, "timestamp": format_timestamp(at), "data": data}


def message_for(
    endpoint: WebhookEndpoint, event_type: str, at: datetime, data: dict[str, Any]
) -> WebhookMessage:
    return WebhookMessage(
        id=new_id("msg"),
        endpoint_id=endpoint.id,
        account_id=endpoint.account_id,
        event_type=event_type,
        payload=payload(event_type, at, data),
        state=MessageState.PENDING,
        attempts=0,
        next_attempt_at=at,
        created_at=at,
    )


async def emit(
    tx: Transaction, at: datetime, endpoints: list[WebhookEndpoint], events: list[Event]
) -> list[WebhookMessage]:
    """Insert a message for every (event, endpoint that wants it) in ``tx``."""
    messages = [
        message_for(endpoint, event_type, at, data)
        for event_type, data in events
        for endpoint in endpoints
        if endpoint.wants(event_type)
    ]
    for message in messages:
        await tx.add_webhook_message(message)
    return messages


_SNAPSHOT_EVENTS = {
    JobType.SNAPSHOT_CREATE: WebhookEventType.SNAPSHOT_CREATED,
    JobType.SNAPSHOT_SCHEDULED: WebhookEventType.SNAPSHOT_CREATED,
    JobType.SNAPSHOT_RESTORE: WebhookEventType.SNAPSHOT_RESTORED,
    JobType.SNAPSHOT_DELETE: WebhookEventType.SNAPSHOT_DELETED,
    JobType.SNAPSHOT_EXPIRE: WebhookEventType.SNAPSHOT_EXPIRED,
}


async def record_job_events(
    tx: Transaction,
    at: datetime,
    job: Job,
    vps: Vps | None,
    *,
    snapshot_before: Snapshot | None,
) -> list[WebhookMessage]:
    """The events of a job that just ended (``job`` in its final state), in the transaction
    that ends it: ``job.completed`` or ``job.failed``, and for a completed snapshot job the
    snapshot's own event. ``snapshot_before`` is the job's snapshot as it was before the
    job's success was recorded (a deleted one is gone afterwards)."""
    endpoints = await tx.list_webhook_endpoints(job.account_id)
    if not any(e.enabled for e in endpoints):
        return []  # the common case costs one query
    vps_ref = {"id": job.vps_id, "name": vps.name if vps is not None else None}
    completed = job.status is JobStatus.COMPLETED
    events: list[Event] = [
        (
            WebhookEventType.JOB_COMPLETED if completed else WebhookEventType.JOB_FAILED,
            {"job": job_data(job), "vps": vps_ref},
        )
    ]
    snapshot_event = _SNAPSHOT_EVENTS.get(job.type)
    if completed and snapshot_event is not None and job.snapshot_name and vps is not None:
        after = await tx.get_snapshot(vps.id, job.snapshot_name)
        shown = after if after is not None else snapshot_before
        if shown is not None:
            events.append(
                (
                    snapshot_event,
                    {"snapshot": snapshot_data(shown), "vps": vps_ref, "jobId": job.id},
                )
            )
        replaced = (job.result or {}).get("replaced")
        if job.type is JobType.SNAPSHOT_SCHEDULED and isinstance(replaced, str):
            # The rotation deleted the oldest scheduled snapshot to make room.
            events.append(
                (
                    WebhookEventType.SNAPSHOT_DELETED,
                    {
                        "snapshot": {"name": replaced, "origin": "scheduled"},
                        "vps": vps_ref,
                        "jobId": job.id,
                        "reason": "rotation",
                    },
                )
            )
    return await emit(tx, at, endpoints, events)
