"""Domain objects → response schemas."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Response

from vpsnap.api.schemas import (
    GateOut,
    JobCreatorOut,
    JobOut,
    OperationBody,
    OperationOut,
)
from vpsnap.domain.clock import format_timestamp
from vpsnap.domain.model import Job, JobType, Snapshot
from vpsnap.domain.rules import Gate
from vpsnap.services.inventory import VpsPage, VpsView
from vpsnap.services.snapshots import SnapshotListing


def poll_url(job_id: str) -> str:
    return f"/api/jobs/{job_id}"


# The two list answers (and one VPS) are built as JSON-ready dicts and serialised here, not
# through their response models: FastAPI's validation and serialisation of 20 nested models
# cost more than the rest of the answer (docs/performance.md, "Reads"). The models stay the
# schema: the routes declare them (``response_model``, so /openapi.json is unchanged), and
# tests/api/test_fast_json.py checks that each dict is exactly what its model would produce.


def json_response(body: Any, status_code: int = 200) -> Response:
    """``body`` as a JSON answer, as FastAPI would send a response model (compact, UTF-8).

    ``body`` holds only JSON types (str, int, float, bool, None, list, dict); a non-finite
    float raises ``ValueError`` (pydantic would write ``null``; none is ever stored).
    """
    content = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(content.encode(), status_code=status_code, media_type="application/json")


def vps_json(view: VpsView) -> dict[str, Any]:
    """A VPS as ``VpsOut`` serialises it (camelCase keys, contract timestamps)."""
    vps = view.vps
    os_ = vps.operating_system
    billing = vps.billing
    resources = vps.resources
    return {
        "id": vps.id,
        "name": vps.name,
        "primaryIp": vps.primary_ip,
        "serviceStatus": vps.service_status.value,
        "powerState": view.power_state.value,
        "operatingSystem": {
            "displayName": os_.display_name,
            "family": os_.family,
            "version": os_.version,
            "variant": os_.variant,
        }
        if os_
        else None,
        "resources": {
            "cpuCores": resources.cpu_cores,
            "memoryGb": float(resources.memory_gb),
            "storageGb": float(resources.storage_gb),
        },
        "billing": {
            "amount": billing.amount,
            "currencyCode": billing.currency_code,
            "billingCycle": billing.billing_cycle,
            "isPayg": billing.is_payg,
        }
        if billing
        else None,
        "node": vps.node,
        "createdAt": format_timestamp(vps.created_at),
    }


def vps_page_json(page: VpsPage) -> dict[str, Any]:
    """A page of VPSes as ``VpsPageOut`` serialises it."""
    return {
        "data": [vps_json(v) for v in page.items],
        "hasMore": page.has_more,
        "nextCursor": page.next_cursor,
    }


def snapshot_json(snapshot: Snapshot, can_restore: Gate | None = None) -> dict[str, Any]:
    """A snapshot as ``SnapshotOut`` serialises it."""
    return {
        "displayId": snapshot.name,
        "name": snapshot.name,
        "description": snapshot.description,
        "createdAt": format_timestamp(snapshot.created_at),
        "expiresAt": format_timestamp(snapshot.expires_at),
        "includesMemoryState": snapshot.includes_memory_state,
        "parentName": snapshot.parent_name,
        "status": snapshot.status.value,
        "origin": snapshot.origin.value,
        "consistency": snapshot.consistency.value,
        "actions": {"canRestore": gate_json(can_restore)} if can_restore is not None else None,
        "consistencyReason": snapshot.consistency_reason,
    }


def gate_json(gate: Gate) -> dict[str, Any]:
    """A gate as ``GateOut`` serialises it."""
    return {"allowed": gate.allowed, "reason": gate.reason, "code": gate.code}


def gate_out(gate: Gate) -> GateOut:
    return GateOut.model_validate(gate_json(gate))


def snapshot_list_json(listing: SnapshotListing) -> dict[str, Any]:
    """A VPS's snapshot listing as ``SnapshotListOut`` serialises it."""
    gates = listing.restore_gates
    return {
        "data": [snapshot_json(s, gates.get(s.name)) for s in listing.snapshots],
        "limits": {
            "totalSnapshots": listing.usage.total,
            "usedSnapshots": listing.usage.used,
            "remainingSnapshots": listing.usage.remaining,
        },
        "available": listing.available,
        "reason": listing.reason,
        "actions": {
            "canCreate": gate_json(listing.can_create),
            "canRestore": gate_json(listing.can_restore),
            "canCreateWithMemory": gate_json(listing.can_create_with_memory),
        },
    }


def operation_out(job: Job) -> OperationOut:
    if job.snapshot_name:
        result: dict[str, object] | None = {"name": job.snapshot_name}
    elif job.type is JobType.VPS_POWER:
        result = {"action": job.payload["action"]}
    else:
        result = None
    return OperationOut(
        operation=OperationBody(
            status=job.status, job_id=job.id, poll_url=poll_url(job.id), result=result
        )
    )


def accepted(response: Response, job: Job) -> OperationOut:
    """A 202 answer for a queued job, with its poll URL in ``Location``."""
    response.status_code = 202
    response.headers["Location"] = poll_url(job.id)
    return operation_out(job)


def job_out(job: Job, error: dict[str, object] | None) -> JobOut:
    return JobOut(
        job_id=job.id,
        type=job.type.value,
        status=job.status,
        progress=job.progress,
        vps_id=job.vps_id,
        snapshot_name=job.snapshot_name,
        result=job.result,
        error=error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        request_id=job.request_id,
        created_by=JobCreatorOut(kind=job.created_by.kind.value, id=job.created_by.id)
        if job.created_by
        else None,
    )
