"""Browser fixtures: one real ``vpsnap serve --demo`` process per test session and one headless
Debian Chromium for the browser tests; a fresh browser context (cookies, viewport) per test, which records any
request to another origin (there must be none: vpsnap serves every asset itself)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Playwright, Route, sync_playwright

from tests.live_server import LiveServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "dashboard"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="session")
def panel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("panel-server"))
    yield live
    live.stop()


# Module scope, not session: while sync Playwright runs, its event loop is the running loop
# of this thread, and pytest-asyncio cannot run the async tests of the other modules. Every
# browser test is in test_browser.py, so this is still one browser per test run.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # No skip: scripts/install installs Debian's chromium; without it the run must fail.
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: run scripts/install"
    # Chromium puts its singleton socket in TMPDIR and aborts when that path does not fit a
    # unix address; scripts/check runs the suite under a deliberately long TMPDIR (vpsnap's
    # own sockets must cope with one), so Chromium gets the short one.
    chromium = playwright.chromium.launch(
        executable_path=CHROMIUM, args=CHROMIUM_ARGS, env={**os.environ, "TMPDIR": "/tmp"}
    )
    yield chromium
    chromium.close()


class ForeignRequests(list[str]):
    """URLs the pages tried to load from another origin (each was aborted)."""


@pytest.fixture
def foreign_requests() -> ForeignRequests:
    return ForeignRequests()


@pytest.fixture
def other_origins() -> list[str]:
    """Origins a test serves itself on purpose (the cross-origin attacker's page)."""
    return []


@pytest.fixture
def context(
    browser: Browser,
    panel_server: LiveServer,
    foreign_requests: ForeignRequests,
    other_origins: list[str],
) -> Iterator[BrowserContext]:
    ctx = browser.new_context(base_url=panel_server.url, viewport={"width": 1440, "height": 900})
    ctx.set_default_timeout(TIMEOUT_MS)
    ctx.set_default_navigation_timeout(TIMEOUT_MS)
    own = panel_server.url

    def guard(route: Route) -> None:
        url = route.request.url
        if url.startswith((own, "data:", "blob:", *other_origins)) or url == "about:blank":
            route.continue_()
        else:
            foreign_requests.append(url)
            route.abort()

    ctx.route("**/*", guard)
    yield ctx
    ctx.close()
    assert not foreign_requests, f"pages loaded from another origin: {foreign_requests}"
