"""Routing errors as the panel's pages for browsers, problem documents for everyone else.

Kept apart from ``vpsnap.dashboard.web`` (Jinja2 and the templates), which it imports only
when it renders a page: the app installs this handler when it is built, the panel itself on
its first request (``vpsnap.dashboard``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

# Paths whose errors stay problem documents whatever the client accepts.
_MACHINE_PREFIXES = ("/api/", "/openapi.json", "/metrics", "/healthz", "/readyz", "/errors")
ExceptionHandler = Callable[[Request, Exception], Coroutine[Any, Any, Response]]


def wants_page(request: Request) -> bool:
    """A browser navigating the panel (``Accept: text/html``) outside the machine paths."""
    if request.url.path.startswith(_MACHINE_PREFIXES):
        return False
    return "text/html" in request.headers.get("accept", "")


def html_errors_for_browsers(problem_handler: ExceptionHandler) -> ExceptionHandler:
    """Wrap the app's handler of routing errors (unknown path, wrong method): a browser on a
    panel path gets the panel's page; every other client keeps the problem document."""

    async def handler(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        if wants_page(request) and status in (404, 405):
            from vpsnap.dashboard.web import error_page  # noqa: PLC0415 - Jinja2, on demand

            return error_page(request, status)
        return await problem_handler(request, exc)

    return handler
