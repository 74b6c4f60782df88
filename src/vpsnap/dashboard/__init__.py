"""The customer's web panel (issue 11): server-rendered pages on the same services as the API
(never HTTP calls to it), signed in with the ``hostup_session`` cookie.

The panel is installed on the app's first request that no API route answers, not when the app
is built: its routes, Jinja2 and its templates cost the server's start-up about 40-90 ms of CPU
(docs/performance.md, "Start-up and pacing") that an API-only server never needs. This module
imports nothing of it; ``vpsnap.dashboard.mount`` does the installing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute, Match, NoMatchFound

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.datastructures import URLPath
    from starlette.types import Receive, Scope, Send

    from vpsnap.rate_counter import RateCounter
    from vpsnap.settings import Settings

STATIC_PATH = "/static/panel"


def install(app: FastAPI, settings: Settings, counter: RateCounter) -> None:
    """Add the panel to the app, installed on the first request that reaches it; sign-in
    failures are counted in ``counter`` (the API's rate-limit storage)."""
    app.router.routes.append(PanelOnFirstRequest(app, settings, counter))


def install_pending(app: FastAPI) -> None:
    """Install the panel now if it still waits for its first request (for what lists the
    app's routes: tests, tools)."""
    for route in list(app.router.routes):
        if isinstance(route, PanelOnFirstRequest):
            route.install_panel()


class PanelOnFirstRequest(BaseRoute):
    """Stands where the panel's routes go (after every API route) until a request reaches it:
    then it puts the panel's routes and assets in its place and routes the request again, so
    that the request is answered exactly as if the panel had been there from the start (a
    panel page, the router's 404/405 or its trailing-slash redirect).

    It matches every HTTP and WebSocket request: the router tries routes in order and takes
    the first full match, so only requests no API route fully matched come here. Installing
    is synchronous (no ``await`` between the check and the swap), so two first requests on the
    event loop cannot both install it.
    """

    def __init__(self, app: FastAPI, settings: Settings, counter: RateCounter) -> None:
        self.app = app
        self.settings = settings
        self.counter = counter

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return (Match.FULL, {}) if scope["type"] in ("http", "websocket") else (Match.NONE, {})

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.install_panel()
        await self.app.router(scope, receive, send)

    def install_panel(self) -> None:
        """Replace this placeholder with the panel's routes, at its place (idempotent)."""
        routes = self.app.router.routes
        at = next((i for i, route in enumerate(routes) if route is self), None)
        if at is None:
            return  # installed by an earlier request
        from vpsnap.dashboard.mount import install_now  # noqa: PLC0415 - the point of it

        del routes[at]
        count = len(routes)
        install_now(self.app, self.settings, self.counter)
        # install_now appends; routes added after this placeholder stay after the panel.
        added = routes[count:]
        del routes[count:]
        routes[at:at] = added
