"""``/api/v2/vps/{id}/snapshot-schedules``: read, set and remove a VPS's snapshot schedule."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from vpsnap.api.deps import ReadVm, ServicesDep, require
from vpsnap.api.openapi import problem_responses
from vpsnap.api.params import VpsIdPath
from vpsnap.api.presenters import gate_out
from vpsnap.api.schedule_schemas import (
    ScheduleActionsOut,
    ScheduleIn,
    ScheduleOut,
    ScheduleStateOut,
)
from vpsnap.api.schemas import LimitsOut
from vpsnap.domain.auth import Principal, Scope
from vpsnap.services.schedules import ScheduleService, ScheduleView

router = APIRouter(prefix="/api/v2/vps/{vps_id}/snapshot-schedules", tags=["Schedules"])

WriteVm = Annotated[Principal, Depends(require(Scope.WRITE_VM))]

_READ_ERRORS = problem_responses("forbidden", "vps_not_found")
_PUT_ERRORS = problem_responses("forbidden", "vps_not_found", "snapshots_not_included")


async def get_schedule_service(services: ServicesDep) -> ScheduleService:
    # Stateless and cheap: built from the process's store and clock (the one the snapshot
    # service was given), so schedules need no wiring of their own in the container.
    return ScheduleService(services.store, services.snapshots.clock)


SchedulesDep = Annotated[ScheduleService, Depends(get_schedule_service)]


def schedule_state_out(view: ScheduleView) -> ScheduleStateOut:
    schedule = view.schedule
    return ScheduleStateOut(
        schedule=ScheduleOut(
            enabled=schedule.enabled,
            interval_hours=schedule.interval_hours,
            next_run_at=schedule.next_run_at,
            last_run_at=schedule.last_run_at,
            last_run_status=schedule.last_run_status,
            created_at=schedule.created_at,
            updated_at=schedule.updated_at,
        )
        if schedule is not None
        else None,
        limits=LimitsOut(
            total_snapshots=view.usage.total,
            used_snapshots=view.usage.used,
            remaining_snapshots=view.usage.remaining,
        ),
        available=view.available,
        reason=view.reason,
        actions=ScheduleActionsOut(can_enable=gate_out(view.can_enable)),
    )


@router.get(
    "",
    operation_id="getSnapshotSchedule",
    response_model=ScheduleStateOut,
    responses=_READ_ERRORS,
)
async def get_schedule(
    vps_id: VpsIdPath, principal: ReadVm, schedules: SchedulesDep
) -> ScheduleStateOut:
    """The VPS's schedule (null when it has none), its slots, and whether it can be enabled."""
    return schedule_state_out(await schedules.get(principal, vps_id))


@router.post(
    "",
    operation_id="putSnapshotSchedule",
    response_model=ScheduleStateOut,
    responses=_PUT_ERRORS,
)
async def put_schedule(
    vps_id: VpsIdPath, body: ScheduleIn, principal: WriteVm, schedules: SchedulesDep
) -> ScheduleStateOut:
    """Create or replace the schedule. `409 snapshots_not_included` when enabling a VPS without
    snapshot slots; disabling is always allowed."""
    view = await schedules.put(
        principal, vps_id, enabled=body.enabled, interval_hours=body.interval_hours
    )
    return schedule_state_out(view)


@router.delete(
    "",
    operation_id="deleteSnapshotSchedule",
    status_code=204,
    response_class=Response,
    responses=_READ_ERRORS,
)
async def delete_schedule(
    vps_id: VpsIdPath, principal: WriteVm, schedules: SchedulesDep
) -> Response:
    """Remove the schedule (204 also when there was none). Its snapshots are kept and expire
    as usual; a run already queued still completes."""
    await schedules.delete(principal, vps_id)
    return Response(status_code=204)
