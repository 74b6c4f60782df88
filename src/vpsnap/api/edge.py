"""The edge of every HTTP request (pure ASGI, so it also covers unknown routes and errors):
request id, per-caller rate limit, body size limit, JSON access log, last-resort 500."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator

import structlog
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vpsnap.api.problems import problem_response
from vpsnap.api.ratelimit import RateLimits
from vpsnap.domain.errors import DomainError, PayloadTooLarge, RateLimited
from vpsnap.domain.ids import new_id
from vpsnap.metrics import REQUEST_DURATION

log = structlog.get_logger("vpsnap.http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def caller_identity(scope: Scope) -> str:
    """Who is counted: the presented credential (hashed), else the client address."""
    auth = _header(scope, b"authorization")
    credential = None
    if auth and auth.lower().startswith("bearer "):
        credential = auth[7:].strip()
    credential = credential or _header(scope, b"x-api-key")
    if credential:
        return "key:" + hashlib.sha256(credential.encode()).hexdigest()[:32]
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        rate_limits: RateLimits,
        max_body_bytes: int,
        public_base_url: str | None,
    ) -> None:
        self.app = app
        self.rate_limits = rate_limits
        self.max_body_bytes = max_body_bytes
        self.public_base_url = public_base_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else new_id("req")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["public_base_url"] = self.public_base_url
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
            rate = await self.rate_limits.hit_caller(caller_identity(scope))
            extra.update(rate.headers())
            if not rate.allowed:
                error: DomainError = RateLimited(
                    f"Rate limit of {rate.limit} requests per {rate.window_seconds} s reached. "
                    f"Retry in {rate.retry_after} s.",
                    rate.retry_after,
                )
                extra["Retry-After"] = str(rate.retry_after)
                await problem_response(scope, error)(scope, receive, send_with_headers)
                return
            body_receive = await self._limit_body(scope, receive)
            if body_receive is None:
                error = PayloadTooLarge(f"The request body exceeds {self.max_body_bytes} bytes.")
                await problem_response(scope, error)(scope, receive, send_with_headers)
                return
            await self.app(scope, body_receive, send_with_headers)
        except Exception:
            log.exception("request_crashed", request_id=request_id, path=scope.get("path"))
            if not status["started"]:
                response = problem_response(scope, DomainError("Something failed on our side."))
                await response(scope, receive, send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            REQUEST_DURATION.labels(
                route_template(scope), scope.get("method", ""), str(status["code"])
            ).observe(elapsed)
            log.info(
                "request_completed",
                request_id=request_id,
                method=scope.get("method"),
                path=scope.get("path"),
                status=status["code"],
                duration_ms=round(elapsed * 1000, 2),
            )

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
