"""FastAPI dependencies: the services of this process and the authenticated caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from vpsnap.api.edge import presented_credential
from vpsnap.api.ratelimit import RateLimits
from vpsnap.domain.auth import Principal, Scope
from vpsnap.domain.errors import Forbidden, Unauthorized
from vpsnap.services.container import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_rate_limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


ServicesDep = Annotated[Services, Depends(get_services)]
RateLimitsDep = Annotated[RateLimits, Depends(get_rate_limits)]


async def authenticated(request: Request, services: ServicesDep) -> Principal:
    """The caller the edge verified (``EdgeMiddleware``: one verification per request), or
    ``Unauthorized``."""
    state = request.scope.get("state", {})
    if "principal" in state:
        principal: Principal | None = state["principal"]
        if principal is not None:
            return principal
        error: Unauthorized | None = state.get("credential_error")
        if error is not None:
            raise error
        credential = None
    else:  # an app without the edge in front (never served so): verify here
        credential = presented_credential(request.scope)
    if credential is None:
        raise Unauthorized(
            "Authentication is required: send `Authorization: Bearer <api key>` "
            "or `X-API-Key: <api key>`."
        )
    return await services.credentials.authenticate(credential)


CallerDep = Annotated[Principal, Depends(authenticated)]


def require(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: CallerDep) -> Principal:
        if not principal.has(scope):
            raise Forbidden(
                f"This API key lacks the {scope.value} scope needed here.",
                extensions={"requiredScopes": [scope.value]},
            )
        return principal

    return check


ReadVm = Annotated[Principal, Depends(require(Scope.READ_VM))]
BackupVm = Annotated[Principal, Depends(require(Scope.BACKUP_VM))]
