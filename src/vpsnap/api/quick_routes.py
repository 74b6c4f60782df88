"""Hot read routes answered without FastAPI's dependency solving when the request is plainly
valid (docs/performance.md, "Reads, fourth round").

FastAPI's handler solves the dependencies of every request (three levels for a scoped route)
and validates each declared parameter through pydantic: about a third of the server's time of
a list request once the store is fast. ``QuickRoute`` keeps that handler for every request it
does not take, and takes one only when nothing could differ:

- the route's parameters are those its ``QuickParams`` expects, and the request's values are
  such that FastAPI's validation certainly accepts them and yields the same Python values (a
  ``limit`` of 1-3 plain digits in range, a VPS id matching its pattern exactly, no unknown,
  repeated or empty query parameter); anything else — an error to report, an unusual but
  valid spelling — goes to FastAPI, which answers as before;
- every dependency is a coroutine taking only the ``Request`` and declaring nothing of its
  own (``require(scope)``, ``get_services``), no ``dependency_overrides`` are set and no
  OpenTelemetry request data is being collected; otherwise the route is always FastAPI's.

The dependencies run first and in their declared order, as FastAPI runs them before it
validates parameters: an unauthenticated or unauthorised request gets the same problem. The
endpoint is the same function with the same arguments; it returns a ``Response``, which
FastAPI too would send as it is. ``/openapi.json`` is built from the route's declarations,
which are unchanged.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from fastapi.telemetry import get_telemetry_data

from vpsnap.domain.ids import VPS_ID_PATTERN

QuickParams = Callable[[Request], dict[str, Any] | None]
"""The endpoint's parameter values when FastAPI would certainly accept the request's, with
the values FastAPI would pass; None: let FastAPI decide."""

_QUICK: dict[Callable[..., Any], tuple[QuickParams, frozenset[str]]] = {}


def quick(
    params: QuickParams, names: frozenset[str]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark an endpoint (under its route decorator) as served by ``QuickRoute`` when
    ``params`` accepts the request; ``names`` are the endpoint's parameters ``params`` gives
    (checked against the route's declared path and query parameters)."""

    def mark(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        _QUICK[endpoint] = (params, names)
        return endpoint

    return mark


def _plain_dependency(dependant: Any) -> bool:
    """A dependency FastAPI would call as ``await call(request)`` with nothing else solved."""
    return (
        asyncio.iscoroutinefunction(dependant.call)
        and dependant.request_param_name is not None
        and not dependant.dependencies
        and not (
            dependant.path_params
            or dependant.query_params
            or dependant.header_params
            or dependant.cookie_params
            or dependant.body_params
        )
        and dependant.websocket_param_name is None
        and dependant.http_connection_param_name is None
        and dependant.response_param_name is None
        and dependant.background_tasks_param_name is None
        and dependant.security_scopes_param_name is None
    )


class QuickRoute(APIRoute):
    """``APIRoute`` whose handler answers plainly valid requests of a ``quick`` endpoint
    itself (module docstring); every other request, and every other endpoint, is FastAPI's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        slow = super().get_route_handler()
        marked = _QUICK.get(self.endpoint)
        dependant = self.dependant
        if marked is None:
            return slow
        params_of, names = marked
        declared = {f.name for f in dependant.path_params} | {
            f.name for f in dependant.query_params
        }
        if (
            declared != names
            or dependant.header_params
            or dependant.cookie_params
            or dependant.body_params
            or dependant.request_param_name is not None
            or dependant.response_param_name is not None
            or dependant.background_tasks_param_name is not None
            or not all(_plain_dependency(d) for d in dependant.dependencies)
            or not asyncio.iscoroutinefunction(dependant.call)
        ):
            return slow  # not the shape this path knows: FastAPI's handler only
        calls: list[tuple[str, Any]] = [(str(d.name), d.call) for d in dependant.dependencies]
        endpoint: Any = dependant.call

        async def handler(request: Request) -> Response:
            # The app's overrides (an included router's route knows no provider of its own).
            app = request.scope.get("app")
            if getattr(app, "dependency_overrides", None) or get_telemetry_data() is not None:
                return await slow(request)
            values = params_of(request)
            if values is None:
                return await slow(request)
            for name, call in calls:
                values[name] = await call(request)
            response: Response = await endpoint(**values)
            return response

        return handler


def plain_query(request: Request, allowed: frozenset[str]) -> dict[str, str] | None:
    """The query parameters (as FastAPI reads them: Starlette's ``request.query_params``) as a
    dict when each is one of ``allowed``, given once and non-empty; None otherwise (FastAPI
    decides: it takes the last of repeated ones, ignores unknown ones)."""
    if not request.scope.get("query_string"):
        return {}
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed or name in found or not value:
            return None
        found[name] = value
    return found


_LIMIT = re.compile(r"[1-9][0-9]{0,2}")


def plain_limit(text: str | None, default: int, highest: int) -> int | None:
    """A page size given as 1-3 plain digits within 1..``highest`` (``default`` when absent),
    which FastAPI's ``int`` with ``ge=1, le=highest`` accepts as this very value; None:
    anything else."""
    if text is None:
        return default
    if not _LIMIT.fullmatch(text):
        return None
    value = int(text)
    return value if value <= highest else None


def full_pattern(pattern: str) -> re.Pattern[str]:
    """An anchored ``^…$`` pattern for ``fullmatch`` (Python's ``$`` also matches before a
    final newline; pydantic's does not)."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"an anchored pattern is expected: {pattern!r}")
    return re.compile(pattern[1:-1])


_VPS_ID = full_pattern(VPS_ID_PATTERN)
_VPS_ID_ONLY = frozenset({"vps_id"})


def quick_vps_id(request: Request) -> dict[str, Any] | None:
    """``vps_id`` of a route whose only parameter is the VPS id in its path, when it matches
    ``VPS_ID_PATTERN`` (``VpsIdPath``) and no query is sent."""
    if request.scope.get("query_string"):
        return None
    vps_id = request.path_params.get("vps_id")
    if not isinstance(vps_id, str) or _VPS_ID.fullmatch(vps_id) is None:
        return None
    return {"vps_id": vps_id}


def quick_by_vps_id(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``quick`` for a route whose only parameter is ``vps_id`` (``VpsIdPath``)."""
    return quick(quick_vps_id, _VPS_ID_ONLY)(endpoint)
