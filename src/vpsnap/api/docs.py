"""Interactive API docs (Swagger UI at ``/docs``) from assets vpsnap serves itself, so they
work offline and load nothing from a CDN.

The assets come from the ``fastapi-offline`` package (its Swagger UI 5 bundle); only its
static folder is used, the page is FastAPI's own with local URLs. ``/redoc`` redirects to
``/docs``: the ReDoc bundle fetches its logo from a CDN.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/static/docs"


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` (and send ``/redoc`` there); the app must be built with
    ``docs_url=None`` and ``redoc_url=None`` (FastAPI's own pages point at a CDN)."""
    folder = Path(str(files("fastapi_offline") / "static"))
    app.mount(ASSETS, StaticFiles(directory=folder), name="docs-assets")
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=title,
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> RedirectResponse:
        return RedirectResponse("/docs")
