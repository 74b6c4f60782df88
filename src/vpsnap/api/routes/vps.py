"""``/api/v2/vps``: the caller's VPS inventory."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from vpsnap.api.deps import ReadVm, ServicesDep
from vpsnap.api.openapi import problem_responses
from vpsnap.api.params import CursorParam, IpFilter, NameFilter, VpsIdPath
from vpsnap.api.presenters import json_response, vps_json, vps_page_json
from vpsnap.api.quick_routes import QuickRoute, plain_limit, plain_query, quick, quick_by_vps_id
from vpsnap.api.schemas import VpsOut, VpsPageOut
from vpsnap.domain.ports import VpsFilter
from vpsnap.services.inventory import MAX_PAGE_SIZE

# QuickRoute: the list's and one VPS's plainly valid requests skip FastAPI's dependency
# solving (api/quick_routes.py); every other route and request is FastAPI's as before.
router = APIRouter(prefix="/api/v2/vps", tags=["VPS"], route_class=QuickRoute)

_LIST_QUERY = frozenset({"limit", "cursor"})
_DEFAULT_LIMIT = 20


def _quick_list_params(request: Request) -> dict[str, Any] | None:
    """``list_vps``'s arguments when FastAPI would accept the query as given: ``limit`` as
    plain digits in range, ``cursor`` (any text: the service judges it). The name and IP
    filters (patterns, an address check) and anything else are left to FastAPI."""
    query = plain_query(request, _LIST_QUERY)
    if query is None:
        return None
    limit = plain_limit(query.get("limit"), _DEFAULT_LIMIT, MAX_PAGE_SIZE)
    if limit is None:
        return None
    return {"limit": limit, "cursor": query.get("cursor"), "name": None, "primary_ip": None}


@router.get(
    "",
    operation_id="listVps",
    response_model=VpsPageOut,
    responses=problem_responses("invalid_request", "invalid_cursor", "forbidden"),
)
@quick(_quick_list_params, frozenset({"limit", "cursor", "name", "primary_ip"}))
async def list_vps(
    principal: ReadVm,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = _DEFAULT_LIMIT,
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
@quick_by_vps_id
async def get_vps(vps_id: VpsIdPath, principal: ReadVm, services: ServicesDep) -> Response:
    """One VPS, with its power state as the hypervisor reports it now."""
    return json_response(vps_json(await services.inventory.get(principal, vps_id)))
