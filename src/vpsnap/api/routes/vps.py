"""``/api/v2/vps``: the caller's VPS inventory."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from vpsnap.api.deps import ReadVm, ServicesDep
from vpsnap.api.openapi import problem_responses
from vpsnap.api.params import CursorParam, IpFilter, NameFilter, VpsIdPath
from vpsnap.api.presenters import json_response, vps_json, vps_page_json
from vpsnap.api.schemas import VpsOut, VpsPageOut
from vpsnap.domain.ports import VpsFilter

router = APIRouter(prefix="/api/v2/vps", tags=["VPS"])


@router.get(
    "",
    operation_id="listVps",
    response_model=VpsPageOut,
    responses=problem_responses("invalid_request", "invalid_cursor", "forbidden"),
)
async def list_vps(
    principal: ReadVm,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: CursorParam = None,
    name: NameFilter = None,
    primary_ip: IpFilter = None,
) -> Response:
    """The caller's VPSes, oldest first; follow `nextCursor` for the next page."""
    page = await services.inventory.list(
        principal, VpsFilter(name=name, primary_ip=primary_ip), cursor, limit
    )
    # Serialised here, with the shape of VpsPageOut (api/presenters.py says why).
    return json_response(vps_page_json(page))


@router.get(
    "/{vps_id}",
    operation_id="getVps",
    response_model=VpsOut,
    responses=problem_responses("forbidden", "vps_not_found"),
)
async def get_vps(vps_id: VpsIdPath, principal: ReadVm, services: ServicesDep) -> Response:
    """One VPS, with its power state as the hypervisor reports it now."""
    return json_response(vps_json(await services.inventory.get(principal, vps_id)))
