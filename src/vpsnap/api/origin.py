"""Hands the request's id and client address to the services (``vpsnap.events.context``), for
the audit trail and the jobs a request queues.

Runs inside the edge (which assigns the request id) and after the proxy-header handling (which
replaces the peer address by the client a trusted proxy names, ``VPSNAP_FORWARDED_ALLOW_IPS``),
so the address recorded is the one the edge believed; no second trust setting exists.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from vpsnap.events.context import Origin, originating


class OriginMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        origin = Origin(
            request_id=scope.get("state", {}).get("request_id"),
            client_ip=str(client[0]) if client else None,
        )
        with originating(origin):
            await self.app(scope, receive, send)
