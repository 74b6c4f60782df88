"""Installing the panel's routes and assets on an app (``vpsnap.dashboard`` calls it on the
panel's first request)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from vpsnap.dashboard import STATIC_PATH, auth, pages, settings_pages
from vpsnap.dashboard.config import DashboardConfig
from vpsnap.dashboard.web import HERE
from vpsnap.rate_counter import RateCounter
from vpsnap.settings import Settings


def install_now(app: FastAPI, settings: Settings, counter: RateCounter) -> None:
    """Add the panel's routes and assets to the app now; sign-in failures are counted in
    ``counter`` (the API's rate-limit storage)."""
    app.state.dashboard = DashboardConfig.from_settings(settings, counter)
    for module in (auth, pages, settings_pages):
        app.include_router(module.router)
    app.mount(STATIC_PATH, StaticFiles(directory=HERE / "static"), name="panel-static")
