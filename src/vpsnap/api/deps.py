"""FastAPI dependencies: the services of this process and the authenticated caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from vpsnap.api.edge import SESSION_CONTEXT, presented_credential, presented_session_cookie
from vpsnap.api.problems import base_url
from vpsnap.api.ratelimit import RateLimits
from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.errors import CsrfFailed, Forbidden, Unauthorized
from vpsnap.services.container import Services
from vpsnap.services.sessions import (
    CSRF_HEADER,
    csrf_token_matches,
    from_same_origin,
    origin_of,
)

# Methods that may change state: a cookie-authenticated one must pass the CSRF check.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# The dependencies are coroutines although they never wait: FastAPI runs a plain function
# dependency in a worker thread, one thread hop per request for an attribute read.


def services_of(request: Request) -> Services:
    """The services of the app that serves ``request``."""
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_rate_limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


ServicesDep = Annotated[Services, Depends(get_services)]
RateLimitsDep = Annotated[RateLimits, Depends(get_rate_limits)]


def presented_session(request: Request) -> str | None:
    """The ``hostup_session`` cookie's value, if the request carries one."""
    return presented_session_cookie(request.scope)


def own_origin(request: Request) -> str:
    """The origin our pages are served from: the public base URL, else the allowed Host the
    request came to (``api.trust``)."""
    return base_url(request.scope)


def check_cookie_csrf(request: Request, session_token: str) -> None:
    """The CSRF rule for ``/api`` requests authenticated by the session cookie.

    Refused when ``Origin`` is present and foreign. Accepted when ``Origin`` is ours, or
    (without ``Origin``) ``Sec-Fetch-Site: same-origin``, or the session's CSRF token is in
    ``X-CSRF-Token`` (the panel's pages carry it in ``<meta name="csrf-token">``).
    """
    origin = request.headers.get("origin")
    if origin is not None and origin_of(origin) != origin_of(own_origin(request)):
        raise CsrfFailed(
            f"Origin {origin!r} is not this server's; a request authenticated by the session "
            "cookie may change state only from vpsnap's own pages."
        )
    if from_same_origin(
        origin, request.headers.get("sec-fetch-site"), own_origin(request)
    ) or csrf_token_matches(session_token, request.headers.get(CSRF_HEADER)):
        return
    raise CsrfFailed(
        "A request authenticated by the session cookie that changes state must show it comes "
        "from vpsnap's own pages (Origin, Sec-Fetch-Site: same-origin or X-CSRF-Token). "
        "Scripts should send an API key instead."
    )


async def authenticated(request: Request) -> Principal:
    """The caller: an API key (``Authorization: Bearer`` / ``X-API-Key``) when one is sent,
    else the dashboard session cookie with its role's scopes (and the CSRF check on changes).

    The edge (``EdgeMiddleware``) has verified the credential already, once per request, to
    count the request against the right budget; this reads its verdict. An app without the
    edge in front (never served so) verifies here. The principal is also left in
    ``request.state.principal``.
    """
    state = request.scope.get("state", {})
    if "principal" in state:
        principal: Principal | None = state["principal"]
        error: Unauthorized | None = state.get("credential_error")
        if principal is None:
            raise error or Unauthorized(_NO_CREDENTIAL)
        token = presented_session(request) if state.get(SESSION_CONTEXT) is not None else None
    else:
        # No sub-dependency for the services: each one FastAPI solves costs per request.
        services = services_of(request)
        credential = presented_credential(request.scope)
        token = None
        if credential is not None:
            principal = await services.credentials.authenticate(credential)
        else:
            token = presented_session(request)
            if token is None:
                raise Unauthorized(_NO_CREDENTIAL)
            principal = (await services.sessions.authenticate(token)).principal
    if token is not None and request.method in UNSAFE_METHODS:
        check_cookie_csrf(request, token)
    request.state.principal = principal
    return principal


_NO_CREDENTIAL = (
    "Authentication is required: send `Authorization: Bearer <api key>` or "
    "`X-API-Key: <api key>`, or sign in to the dashboard."
)


CallerDep = Annotated[Principal, Depends(authenticated)]


def require(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller (``authenticated``), refused unless it holds ``scope``."""

    # ``authenticated`` is called, not declared as a sub-dependency: FastAPI solves each
    # dependency level per request (docs/performance.md, "Reads"). No route needs both.
    async def check(request: Request) -> Principal:
        principal = await authenticated(request)
        if not principal.has(scope):
            holder = "Your dashboard role" if principal.user_id else "This API key"
            raise Forbidden(
                f"{holder} lacks the {scope.value} scope needed here.",
                extensions={"requiredScopes": [scope.value]},
            )
        return principal

    return check


ReadVm = Annotated[Principal, Depends(require(Scope.READ_VM))]
BackupVm = Annotated[Principal, Depends(require(Scope.BACKUP_VM))]
