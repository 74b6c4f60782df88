"""``/api/v2/vps/{id}/actions/{start|shutdown|stop|restart|reset}``: queue a power action.

Each answers ``202`` with an operation whose job reports ``powerStateBefore`` and
``powerStateAfter``. The body is optional; only ``restart`` takes a field (``force``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Response

from vpsnap.api.deps import RateLimitsDep, ServicesDep, require
from vpsnap.api.openapi import problem_responses
from vpsnap.api.params import VpsIdPath
from vpsnap.api.presenters import accepted
from vpsnap.api.schemas import OperationOut, PowerActionIn, RestartIn
from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.model import PowerAction

router = APIRouter(prefix="/api/v2/vps/{vps_id}/actions", tags=["Power"])

PowerVm = Annotated[Principal, Depends(require(Scope.POWER_VM))]

_ERRORS = problem_responses(
    "forbidden", "vps_not_found", "vps_not_ready", "node_unavailable", "vps_queue_full"
)

_SUMMARIES = {
    PowerAction.START: "Start the VM (nothing changes when it runs already).",
    PowerAction.SHUTDOWN: "Ask the guest to power off (ACPI) and wait for it.",
    PowerAction.STOP: "Power the VM off at once, like pulling the plug.",
    PowerAction.RESET: "Reset the VM at once, like pressing the reset button.",
}


async def _queue(
    services: ServicesDep,
    rate_limits: RateLimitsDep,
    principal: Principal,
    vps_id: str,
    action: PowerAction,
    response: Response,
    *,
    force: bool = False,
) -> OperationOut:
    await rate_limits.hit_vps_mutation(principal.account_id, vps_id)
    job = await services.power.request(principal, vps_id, action, force=force)
    return accepted(response, job)


def _simple_action(action: PowerAction) -> Callable[..., Awaitable[OperationOut]]:
    async def endpoint(
        vps_id: VpsIdPath,
        response: Response,
        principal: PowerVm,
        services: ServicesDep,
        rate_limits: RateLimitsDep,
        body: Annotated[PowerActionIn | None, Body()] = None,  # noqa: ARG001 - {} or nothing
    ) -> OperationOut:
        return await _queue(services, rate_limits, principal, vps_id, action, response)

    endpoint.__doc__ = _SUMMARIES[action]
    return endpoint


for _action in (PowerAction.START, PowerAction.SHUTDOWN, PowerAction.STOP, PowerAction.RESET):
    router.add_api_route(
        f"/{_action.value}",
        _simple_action(_action),
        methods=["POST"],
        operation_id=f"{_action.value}Vps",
        status_code=202,
        response_model=OperationOut,
        responses=_ERRORS,
    )


@router.post(
    "/restart",
    operation_id="restartVps",
    status_code=202,
    response_model=OperationOut,
    responses=_ERRORS,
)
async def restart_vps(
    vps_id: VpsIdPath,
    response: Response,
    principal: PowerVm,
    services: ServicesDep,
    rate_limits: RateLimitsDep,
    body: Annotated[RestartIn | None, Body()] = None,
) -> OperationOut:
    """Graceful shutdown and start; with `{"force": true}`, a hard stop and start."""
    force = body.force if body is not None else False
    return await _queue(
        services, rate_limits, principal, vps_id, PowerAction.RESTART, response, force=force
    )
