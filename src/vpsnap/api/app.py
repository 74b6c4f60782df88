"""The FastAPI application factory."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from vpsnap import __version__, dashboard
from vpsnap.api.docs import install_docs
from vpsnap.api.edge import EdgeMiddleware
from vpsnap.api.idempotency import IdempotencyMiddleware
from vpsnap.api.openapi import VpsnapApi
from vpsnap.api.origin import OriginMiddleware
from vpsnap.api.problems import (
    domain_error_handler,
    http_error_handler,
    validation_error_handler,
)
from vpsnap.api.ratelimit import RateLimits
from vpsnap.api.routes import (
    audit,
    capacity,
    jobs,
    power,
    schedules,
    service,
    snapshots,
    vps,
    webhooks,
)
from vpsnap.api.trust import HostPolicy
from vpsnap.dashboard.browsers import html_errors_for_browsers
from vpsnap.domain.errors import DomainError
from vpsnap.rate_counter import RateCounter
from vpsnap.services.container import Services
from vpsnap.settings import Settings

DESCRIPTION = """\
HostUp-compatible VPS snapshot API. Snapshots are short-lived, local, copy-on-write restore
points inside the VPS's qcow2 disks, for fast rollback; they are not backups and expire after
about 24 hours. Every error is an RFC 9457 problem document with a stable `code`.
"""


def create_app(
    services: Services, settings: Settings, rate_limits: RateLimits | None = None
) -> VpsnapApi:
    app = VpsnapApi(
        title="vpsnap",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,  # served from local assets by install_docs
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.services = services
    app.state.rate_limits = rate_limits or RateLimits(
        RateCounter.from_settings(settings),
        settings.rate_limit_per_key,
        settings.rate_limit_snapshot_mutations_per_vps,
        settings.rate_limit_per_ip,
    )
    app.add_exception_handler(DomainError, domain_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, html_errors_for_browsers(http_error_handler))
    # Innermost: the request id and client address the edge settled, for the audit trail.
    app.add_middleware(OriginMiddleware)
    # Added before the edge so the edge (request ids, body limit, rate limit) stays outermost
    # and a replayed answer passes through it like a fresh one.
    app.add_middleware(
        IdempotencyMiddleware, service=services.idempotency, credentials=services.credentials
    )
    app.add_middleware(
        EdgeMiddleware,
        rate_limits=app.state.rate_limits,
        max_body_bytes=settings.max_body_bytes,
        hosts=HostPolicy.from_settings(settings),
        credentials=services.credentials,
        sessions=services.sessions,
    )
    if settings.forwarded_allow_ips:
        # Outermost: the edge sees the client a listed proxy names, never one a client claims
        # (uvicorn's own handling is off, see cli/serve.py, so this is the only place).
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    for module in (vps, snapshots, schedules, capacity, power, jobs, service):
        app.include_router(module.router)
    for module in (audit, webhooks):  # operations (issue 12)
        app.include_router(module.router)
    install_docs(app)
    # -- the web panel (issue 11) --
    dashboard.install(app, settings, app.state.rate_limits.counter)
    return app
