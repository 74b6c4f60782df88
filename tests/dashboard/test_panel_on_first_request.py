"""The panel is installed on the first request that reaches it, not when the app is built
(docs/performance.md, "Start-up and pacing"); every request is answered as if it had been there
from the start."""

from __future__ import annotations

import subprocess
import sys

import httpx
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.conftest import Api
from vpsnap.api.app import create_app
from vpsnap.dashboard import PanelOnFirstRequest, install_pending
from vpsnap.dashboard.browsers import html_errors_for_browsers

from .support import BASE, leaf_routes


def _panel_paths(app: object) -> set[str]:
    return {
        r.path
        for r in leaf_routes(getattr(app, "router", None))
        if not r.path.startswith(("/api/", "/errors", "/docs", "/redoc", "/openapi"))
        and r.path not in ("/metrics", "/healthz", "/readyz")
    }


def _placeholders(app: object) -> list[PanelOnFirstRequest]:
    routes = getattr(getattr(app, "router", None), "routes", [])
    return [r for r in routes if isinstance(r, PanelOnFirstRequest)]


async def test_api_requests_leave_the_panel_out_and_a_panel_request_installs_it(api: Api) -> None:
    app = create_app(api.runtime.services, api.runtime.settings)
    assert _panel_paths(app) == set()
    assert len(_placeholders(app)) == 1
    headers = api.auth()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        listed = await c.get("/api/v2/vps", headers=headers)
        assert listed.status_code == 200
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/openapi.json")).status_code == 200
        assert _panel_paths(app) == set()  # answered by API routes: still not installed
        login = await c.get("/login")
        assert login.status_code == 200
        assert ">Sign in</button>" in login.text
        assert login.headers["x-frame-options"] == "DENY"
        assert _placeholders(app) == []
        assert {"/login", "/logout", "/vps", "/keys"} <= _panel_paths(app)
        # Its assets too, and the next requests go straight to the panel's routes.
        css = await c.get("/static/panel/app.css")
        assert css.status_code == 200
        assert (await c.get("/login")).text == login.text


async def test_the_first_request_is_answered_as_with_the_panel_installed(api: Api) -> None:
    # A 404 page, a problem document, a 405 and a trailing-slash redirect, each as the first
    # request of a fresh app, against an app whose panel was installed before.
    cases = [
        ("GET", "/no/such/page", {"Accept": "text/html"}),
        ("GET", "/no/such/page", {"Accept": "application/json"}),
        ("DELETE", "/login", {"Accept": "text/html"}),
        ("GET", "/login/", {}),
    ]
    for method, path, headers in cases:
        lazy = create_app(api.runtime.services, api.runtime.settings)
        eager = create_app(api.runtime.services, api.runtime.settings)
        install_pending(eager)
        answers = []
        for app in (lazy, eager):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                answers.append(await client.request(method, path, headers=headers))
        first, installed = answers
        assert first.status_code == installed.status_code, (method, path)
        assert first.headers.get("content-type") == installed.headers.get("content-type")
        assert first.headers.get("location") == installed.headers.get("location")
        strip = "req_"
        assert first.text.split(strip)[0] == installed.text.split(strip)[0], (method, path)
    assert [c[1] for c in cases] == ["/no/such/page", "/no/such/page", "/login", "/login/"]


async def test_routes_added_after_the_app_stay_after_the_panel(api: Api) -> None:
    app = create_app(api.runtime.services, api.runtime.settings)

    async def late(_request: object) -> PlainTextResponse:
        return PlainTextResponse("late")

    app.router.routes.append(Route("/{anything:path}", late))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        # The placeholder stands before the catch-all, as the panel's routes would.
        assert (await c.get("/login")).status_code == 200
        assert ">Sign in</button>" in (await c.get("/login")).text
        assert (await c.get("/no/such/page")).text == "late"
    paths = [getattr(r, "path", None) for r in app.router.routes]
    assert paths[-1] == "/{anything:path}"


async def test_installing_twice_changes_nothing(api: Api) -> None:
    app = create_app(api.runtime.services, api.runtime.settings)
    (placeholder,) = _placeholders(app)
    placeholder.install_panel()
    routes = list(app.router.routes)
    placeholder.install_panel()
    install_pending(app)
    assert app.router.routes == routes


def test_the_browser_error_handler_is_importable_without_the_panel() -> None:
    # api/app.py installs it when the app is built: it must not bring Jinja2 with it.
    probe = (
        "import sys\n"
        "import vpsnap.dashboard.browsers, vpsnap.dashboard\n"
        "print(sorted(m for m in sys.modules if m.startswith(('jinja2', 'vpsnap.dashboard.'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "['vpsnap.dashboard.browsers']"
    assert callable(html_errors_for_browsers)
