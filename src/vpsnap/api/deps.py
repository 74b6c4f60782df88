"""FastAPI dependencies: the services of this process and the authenticated caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

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


def presented_credential(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


async def authenticated(request: Request, services: ServicesDep) -> Principal:
    credential = presented_credential(request)
    if credential is None:
        raise Unauthorized(
            "Authentication is required: send `Authorization: Bearer <api key>` "
            "or `X-API-Key: <api key>`."
        )
    principal = await services.credentials.authenticate(credential)
    # For the access log (edge): who this request turned out to be.
    request.scope.setdefault("state", {})["principal"] = principal
    return principal


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
