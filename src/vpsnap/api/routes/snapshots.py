"""``/api/v2/vps/{id}/snapshots``: list, create, delete and restore snapshots."""

from __future__ import annotations

from fastapi import APIRouter, Response

from vpsnap.api.deps import BackupVm, RateLimitsDep, ReadVm, ServicesDep
from vpsnap.api.openapi import problem_responses
from vpsnap.api.params import SnapshotNamePath, VpsIdPath
from vpsnap.api.presenters import accepted, json_response, snapshot_list_json
from vpsnap.api.quick_routes import QuickRoute, quick_by_vps_id
from vpsnap.api.schemas import CreateSnapshotIn, OperationOut, SnapshotListOut
from vpsnap.services.snapshots import CreateSnapshot

# QuickRoute: the listing's plainly valid requests skip FastAPI's dependency solving
# (api/quick_routes.py); every other route and request is FastAPI's as before.
router = APIRouter(
    prefix="/api/v2/vps/{vps_id}/snapshots", tags=["Snapshots"], route_class=QuickRoute
)

_LIST_ERRORS = problem_responses("forbidden", "vps_not_found")
# Work queued for the VPS's node: refused while the node is unavailable, bounded per VPS.
_QUEUED_WORK = ("node_unavailable", "vps_queue_full")
_CREATE_ERRORS = problem_responses(
    "forbidden",
    "vps_not_found",
    "snapshot_name_taken",
    "snapshots_not_included",
    "snapshot_limit_reached",
    "vps_not_ready",
    # The VPS's data store would run too low (docs/operations.md, "Disk space").
    "insufficient_storage",
    *_QUEUED_WORK,
)
_DELETE_ERRORS = problem_responses(
    "forbidden", "vps_not_found", "snapshot_not_found", "snapshot_busy", *_QUEUED_WORK
)
_RESTORE_ERRORS = problem_responses(
    "forbidden",
    "vps_not_found",
    "snapshot_not_found",
    "snapshot_busy",
    "vps_not_ready",
    *_QUEUED_WORK,
)


@router.get(
    "", operation_id="listSnapshots", response_model=SnapshotListOut, responses=_LIST_ERRORS
)
@quick_by_vps_id
async def list_snapshots(vps_id: VpsIdPath, principal: ReadVm, services: ServicesDep) -> Response:
    """Snapshots (oldest first), slot limits, and whether create/restore are allowed now."""
    # Serialised here, with the shape of SnapshotListOut (api/presenters.py says why).
    return json_response(snapshot_list_json(await services.snapshots.listing(principal, vps_id)))


@router.post(
    "",
    operation_id="createSnapshot",
    status_code=202,
    response_model=OperationOut,
    responses=_CREATE_ERRORS,
)
async def create_snapshot(
    vps_id: VpsIdPath,
    body: CreateSnapshotIn,
    response: Response,
    principal: BackupVm,
    services: ServicesDep,
    rate_limits: RateLimitsDep,
) -> OperationOut:
    """Queue a snapshot. Check `actions.canCreate` of the list first; poll the job."""
    await rate_limits.hit_vps_mutation(principal.account_id, vps_id)
    job = await services.snapshots.create(
        principal,
        vps_id,
        CreateSnapshot(
            name=body.name,
            description=body.description,
            include_memory_state=body.include_memory_state,
            quiesce=body.quiesce,
        ),
    )
    return accepted(response, job)


@router.delete(
    "/{snapshot_id}",
    operation_id="deleteSnapshot",
    status_code=202,
    response_model=OperationOut,
    responses=_DELETE_ERRORS,
)
async def delete_snapshot(
    vps_id: VpsIdPath,
    snapshot_id: SnapshotNamePath,
    response: Response,
    principal: BackupVm,
    services: ServicesDep,
    rate_limits: RateLimitsDep,
) -> OperationOut:
    """Queue the deletion of a snapshot; its slot is free at once."""
    await rate_limits.hit_vps_mutation(principal.account_id, vps_id)
    job = await services.snapshots.delete(principal, vps_id, snapshot_id)
    return accepted(response, job)


@router.post(
    "/{snapshot_id}/actions/restore",
    operation_id="restoreSnapshot",
    status_code=202,
    response_model=OperationOut,
    responses=_RESTORE_ERRORS,
)
async def restore_snapshot(
    vps_id: VpsIdPath,
    snapshot_id: SnapshotNamePath,
    response: Response,
    principal: BackupVm,
    services: ServicesDep,
    rate_limits: RateLimitsDep,
) -> OperationOut:
    """Queue a rollback of the VPS's disks to the snapshot (power state is kept)."""
    await rate_limits.hit_vps_mutation(principal.account_id, vps_id)
    job = await services.snapshots.restore(principal, vps_id, snapshot_id)
    return accepted(response, job)
