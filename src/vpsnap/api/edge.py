"""The edge of every HTTP request (pure ASGI, so it also covers unknown routes and errors):
request id, allowed host, who is calling (credential verified once, here), per-caller rate
limit, body size limit, JSON access log, last-resort 500.

Invariant (docs/api.md, "Rate limits"): a credential that does not authenticate is no
identity. A request without a verified credential counts against its client address
(``per-ip``); a verified one against its principal (``per-key``). Checking a secret the server
has not verified lately costs one unit of the address's budget *before* the lookup, so a flood
of made-up keys gets as many lookups as the address has budget, and none of them becomes a
limiter key or a cache entry.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any, Protocol

import structlog
from starlette.requests import cookie_parser
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vpsnap.api.problems import problem_response
from vpsnap.api.ratelimit import RateLimits, RateState
from vpsnap.api.trust import HostPolicy
from vpsnap.domain.auth import Principal
from vpsnap.domain.errors import (
    DomainError,
    HostNotAllowed,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)
from vpsnap.domain.ids import new_id
from vpsnap.metrics import REQUEST_DURATION
from vpsnap.services.sessions import COOKIE_NAME

log = structlog.get_logger("vpsnap.http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Authenticator(Protocol):
    """What the edge needs to verify a credential: ``CredentialService`` is the one."""

    def recently_verified(self, secret: str) -> Principal | None: ...

    async def authenticate(self, secret: str) -> Principal: ...


class SessionAuthenticator(Protocol):
    """What the edge needs to verify a dashboard session: ``SessionService`` is the one. The
    context it returns has a ``principal``; any failure raises ``Unauthorized``."""

    async def authenticate(self, token: str) -> Any: ...


SESSION_CONTEXT = "session_context"
"""``scope["state"]`` key: the verified session of a cookie request (the panel reuses it)."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def presented_credential(scope: Scope) -> str | None:
    """The API key a request presents (``Authorization: Bearer``, else ``X-API-Key``)."""
    auth = _header(scope, b"authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = _header(scope, b"x-api-key")
    return key.strip() if key and key.strip() else None


def presented_session_cookie(scope: Scope) -> str | None:
    """The ``hostup_session`` cookie a request carries, if any."""
    cookie = _header(scope, b"cookie")
    if not cookie:
        return None
    return cookie_parser(cookie).get(COOKIE_NAME) or None


def client_address(scope: Scope) -> str:
    """The peer's address, or the client a trusted proxy names (``api.trust``)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        rate_limits: RateLimits,
        max_body_bytes: int,
        hosts: HostPolicy,
        credentials: Authenticator,
        sessions: SessionAuthenticator | None = None,
    ) -> None:
        self.app = app
        self.rate_limits = rate_limits
        self.max_body_bytes = max_body_bytes
        self.hosts = hosts
        self.credentials = credentials
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else new_id("req")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        # Links of an answer made before the host is checked use the configured base.
        state["base_url"] = self.hosts.fallback_base
        extra: dict[str, str] = {"X-Request-Id": request_id}
        status = {"code": 500, "started": False}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for key, value in extra.items():
                    if key.lower().encode() not in present:
                        headers.append((key.lower().encode(), value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            refusal: DomainError | None = None
            try:
                state["base_url"] = self.hosts.base_url(scope)
            except HostNotAllowed as exc:
                refusal = exc
            rate = await self._count(scope, state, authenticate=refusal is None)
            extra.update(rate.headers())
            if not rate.allowed:
                # Its Retry-After comes with the problem answer (api/problems.problem_response).
                refusal = RateLimited(
                    f"Rate limit of {rate.limit} requests per {rate.window_seconds} s reached. "
                    f"Retry in {rate.retry_after} s.",
                    rate.retry_after,
                )
            if refusal is None:
                body_receive = await self._limit_body(scope, receive)
                if body_receive is not None:
                    await self.app(scope, body_receive, send_with_headers)
                    return
                refusal = PayloadTooLarge(f"The request body exceeds {self.max_body_bytes} bytes.")
            await problem_response(scope, refusal)(scope, receive, send_with_headers)
        except Exception as exc:  # answered here: nothing below may leave a request unanswered
            await _failed(
                scope,
                receive,
                send_with_headers,
                exc,
                request_id=request_id,
                started=bool(status["started"]),
            )
        finally:
            elapsed = time.perf_counter() - started
            REQUEST_DURATION.labels(
                route_template(scope), scope.get("method", ""), str(status["code"])
            ).observe(elapsed)
            # Who asked, from where (issue 12): the principal the request authenticated as,
            # and the client address (a trusted proxy's X-Forwarded-For, else the peer).
            principal = state.get("principal")
            client = scope.get("client")
            log.info(
                "request_completed",
                request_id=request_id,
                method=scope.get("method"),
                path=scope.get("path"),
                status=status["code"],
                duration_ms=round(elapsed * 1000, 2),
                client_ip=client[0] if client else None,
                account_id=getattr(principal, "account_id", None),
                key_id=getattr(principal, "key_id", None),
            )

    async def _count(
        self, scope: Scope, state: dict[str, object], *, authenticate: bool
    ) -> RateState:
        """Verify the presented credential (once per request) and count the request against
        the budget of whoever turned out to be calling.

        Leaves ``state["principal"]`` (a ``Principal`` or None) and, for a credential that did
        not authenticate, ``state["credential_error"]`` for the authentication dependency.
        """
        state["principal"] = None
        address = client_address(scope)
        secret = presented_credential(scope) if authenticate else None
        if secret is None:
            token = presented_session_cookie(scope) if authenticate else None
            if token is None or self.sessions is None:
                return await self.rate_limits.hit_address(address)
            return await self._count_session(token, address, state)
        principal = self.credentials.recently_verified(secret)
        if principal is None:
            # A lookup: paid for by the address, before it is made.
            spent = await self.rate_limits.hit_address(address)
            if not spent.allowed:
                return spent
            try:
                principal = await self.credentials.authenticate(secret)
            except Unauthorized as exc:
                state["credential_error"] = exc
                return spent
        state["principal"] = principal
        return await self.rate_limits.hit_principal(principal.principal_id)

    async def _count_session(self, token: str, address: str, state: dict[str, object]) -> RateState:
        """A request with the dashboard cookie (and no key): the session lookup is paid for by
        the address first (sessions are looked up on every request, uncached), then the
        request counts against the signed-in user."""
        assert self.sessions is not None
        spent = await self.rate_limits.hit_address(address)
        if not spent.allowed:
            return spent
        try:
            context = await self.sessions.authenticate(token)
        except Unauthorized as exc:
            state["credential_error"] = exc
            return spent
        principal: Principal = context.principal
        state["principal"] = principal
        state[SESSION_CONTEXT] = context
        return await self.rate_limits.hit_principal(principal.principal_id)

    async def _limit_body(self, scope: Scope, receive: Receive) -> Receive | None:
        """The receive channel to hand on, or None when the body is over the limit.

        A declared Content-Length is checked at once; a body without one (chunked) is read up
        to the limit here and replayed, so an endless stream cannot exhaust memory.
        """
        if scope.get("method") not in _BODY_METHODS:
            return receive
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body_bytes:
                    return None
            except ValueError:
                return None
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


def route_template(scope: Scope) -> str:
    """The route template of a request (not the raw path: it keeps the label set small).

    Answers made before routing (an idempotent replay, a rate limit, a too-large body) have no
    route in the scope yet; they are matched against the app's routes here instead (rare, so
    the walk is not cached).
    """
    path: str | None = getattr(scope.get("route"), "path", None)
    if path:
        return path
    partial: str | None = None
    for route in leaf_routes(getattr(scope.get("app"), "router", None)):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route.path
        if match is Match.PARTIAL and partial is None:
            partial = route.path
    return partial or "unmatched"


def leaf_routes(router: object) -> Iterator[Route]:
    """Every route of ``router``, with those of included routers (not their wrappers)."""
    # FastAPI keeps an included router as one wrapper entry (``original_router``); the
    # templates are on the routes inside it.
    for route in getattr(router, "routes", ()):
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from leaf_routes(inner)
        elif isinstance(route, Route):
            yield route


async def _failed(
    scope: Scope, receive: Receive, send: Send, exc: Exception, *, request_id: str, started: bool
) -> None:
    """Answer a request whose handling raised ``exc`` in the edge (``started``: the answer has
    begun, so nothing more can be sent).

    A ``DomainError`` raised here is outside FastAPI's exception handlers — the credential
    lookup meeting an unavailable database — and gets its own problem answer (a 503 with
    Retry-After, as the same error in a route), never a 500; anything else is a crash.
    """
    if isinstance(exc, DomainError):
        log.warning("request_refused_at_edge", request_id=request_id, code=exc.code)
    else:
        log.error("request_crashed", request_id=request_id, path=scope.get("path"), exc_info=exc)
        exc = DomainError("Something failed on our side.")
    if not started:
        await problem_response(scope, exc)(scope, receive, send)
