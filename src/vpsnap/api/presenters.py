"""Domain objects → response schemas."""

from __future__ import annotations

from fastapi import Response

from vpsnap.api.schemas import (
    BillingOut,
    GateOut,
    JobCreatorOut,
    JobOut,
    LimitsOut,
    OperatingSystemOut,
    OperationBody,
    OperationOut,
    ResourcesOut,
    SnapshotActionsOut,
    SnapshotItemActionsOut,
    SnapshotListOut,
    SnapshotOut,
    VpsOut,
)
from vpsnap.domain.model import Job, JobType, Snapshot
from vpsnap.domain.rules import Gate
from vpsnap.services.inventory import VpsView
from vpsnap.services.snapshots import SnapshotListing


def poll_url(job_id: str) -> str:
    return f"/api/jobs/{job_id}"


def vps_out(view: VpsView) -> VpsOut:
    vps = view.vps
    os_ = vps.operating_system
    billing = vps.billing
    return VpsOut(
        id=vps.id,
        name=vps.name,
        primary_ip=vps.primary_ip,
        service_status=vps.service_status.value,
        power_state=view.power_state.value,
        operating_system=OperatingSystemOut(
            display_name=os_.display_name,
            family=os_.family,
            version=os_.version,
            variant=os_.variant,
        )
        if os_
        else None,
        resources=ResourcesOut(
            cpu_cores=vps.resources.cpu_cores,
            memory_gb=vps.resources.memory_gb,
            storage_gb=vps.resources.storage_gb,
        ),
        billing=BillingOut(
            amount=billing.amount,
            currency_code=billing.currency_code,
            billing_cycle=billing.billing_cycle,
            is_payg=billing.is_payg,
        )
        if billing
        else None,
        node=vps.node,
        created_at=vps.created_at,
    )


def snapshot_out(snapshot: Snapshot, can_restore: Gate | None = None) -> SnapshotOut:
    return SnapshotOut(
        display_id=snapshot.name,
        name=snapshot.name,
        description=snapshot.description,
        created_at=snapshot.created_at,
        expires_at=snapshot.expires_at,
        includes_memory_state=snapshot.includes_memory_state,
        parent_name=snapshot.parent_name,
        status=snapshot.status.value,
        origin=snapshot.origin.value,
        consistency=snapshot.consistency.value,
        actions=SnapshotItemActionsOut(can_restore=gate_out(can_restore))
        if can_restore is not None
        else None,
        consistency_reason=snapshot.consistency_reason,
    )


def gate_out(gate: Gate) -> GateOut:
    return GateOut(allowed=gate.allowed, reason=gate.reason, code=gate.code)


def snapshot_list_out(listing: SnapshotListing) -> SnapshotListOut:
    return SnapshotListOut(
        data=[snapshot_out(s, listing.restore_gates.get(s.name)) for s in listing.snapshots],
        limits=LimitsOut(
            total_snapshots=listing.usage.total,
            used_snapshots=listing.usage.used,
            remaining_snapshots=listing.usage.remaining,
        ),
        available=listing.available,
        reason=listing.reason,
        actions=SnapshotActionsOut(
            can_create=gate_out(listing.can_create),
            can_restore=gate_out(listing.can_restore),
            can_create_with_memory=gate_out(listing.can_create_with_memory),
        ),
    )


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
