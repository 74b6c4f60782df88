"""Helpers for the panel's tests over ASGI: a client per signed-in user, the CSRF token of a
page, and a fresh app on the same runtime when a test needs other settings."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.routing import Route

from tests.conftest import Api
from vpsnap.api.app import create_app

BASE = "http://testserver"
SAME_ORIGIN = {"Origin": BASE}
FOREIGN_ORIGIN = {"Origin": "http://evil.example"}
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def password(api: Api, email: str) -> str:
    users = api.tokens["users"]
    assert isinstance(users, dict)
    value = users[email]
    assert isinstance(value, str)
    return value


async def sign_in(client: httpx.AsyncClient, email: str, secret: str) -> httpx.Response:
    return await client.post(
        "/login", data={"email": email, "password": secret}, headers=SAME_ORIGIN
    )


@asynccontextmanager
async def panel_client(
    api: Api, email: str | None = None, **settings: object
) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a cookie jar of its own, signed in as ``email`` when given. With
    ``settings``, a new app on the same services is built with those settings."""
    app = create_app(api.runtime.services, api.runtime.settings.model_copy(update=settings))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        if email is not None:
            answer = await sign_in(client, email, password(api, email))
            assert answer.status_code == 303, answer.text
        yield client


async def csrf_token(client: httpx.AsyncClient, path: str = "/vps") -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    match = _CSRF_META.search(page.text)
    assert match is not None, "no csrf-token meta on the page"
    return match.group(1)


async def job_count(api: Api) -> int:
    async with api.runtime.store.transaction(read_only=True) as tx:
        total = 0
        for vps_id in api.vps_ids.values():
            vps = await tx.get_vps(vps_id)
            assert vps is not None
            total += len(
                await tx.list_jobs(
                    vps.account_id, vps_id=vps_id, status=None, before_id=None, limit=1000
                )
            )
        return total


def leaf_routes(router: object) -> list[Route]:
    """Every route of an app, looking inside included routers (FastAPI keeps an included
    router as one entry with ``original_router``)."""
    found: list[Route] = []
    for route in getattr(router, "routes", ()):
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found.extend(leaf_routes(inner))
        elif isinstance(route, Route):
            found.append(route)
    return found
