"""The panel's state-changing forms leave audit events with the signed-in user as the actor
(they call the same services as the API). Walked over the app's routes: a new panel form
without an entry here fails."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from tests.conftest import Api
from vpsnap.api.app import create_app
from vpsnap.dashboard import install_pending
from vpsnap.domain.audit import AuditFilter

from .support import SAME_ORIGIN, csrf_token, leaf_routes, panel_client

pytestmark = pytest.mark.qemu

DEMO = "demo@example.com"

Prepare = Callable[[Api, httpx.AsyncClient], Awaitable[tuple[str, dict[str, Any]]]]


@pytest.fixture
def api_worker() -> bool:
    return False  # jobs stay queued: the trail is about the requests


def _vps(api: Api) -> str:
    return api.vps_ids["demo-web"]


async def _snapshot_row(api: Api, client: httpx.AsyncClient, name: str) -> None:
    token = await csrf_token(client)
    answer = await client.post(
        f"/vps/{_vps(api)}/snapshots",
        data={"csrf_token": token, "name": name},
        headers=SAME_ORIGIN,
    )
    assert answer.status_code in (200, 303), answer.text
    assert await api.runtime.worker().run_one()


async def _create(api: Api, _: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    return f"/vps/{_vps(api)}/snapshots", {"name": "panel-made"}


async def _restore(api: Api, client: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    await _snapshot_row(api, client, "panel-restore")
    return f"/vps/{_vps(api)}/snapshots/panel-restore/restore", {}


async def _delete(api: Api, client: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    await _snapshot_row(api, client, "panel-delete")
    return f"/vps/{_vps(api)}/snapshots/panel-delete/delete", {}


async def _power(api: Api, _: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    return f"/vps/{_vps(api)}/power/stop", {}


async def _schedule(api: Api, _: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    return f"/vps/{_vps(api)}/schedule", {"enabled": "on", "interval_hours": "6"}


async def _slots(api: Api, _: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    return f"/vps/{_vps(api)}/slots", {"slots": "5"}


async def _key_create(api: Api, _: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    return "/keys", {"scopes": "read:vm"}


async def _key_revoke(api: Api, _: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    issued = await api.runtime.services.credentials.issue("demo", frozenset(), None)
    return f"/keys/{issued.key.id}/revoke", {}


# Panel route → (audit action, how to call it); None: the route changes nothing audited.
CASES: dict[str, tuple[str, Prepare] | None] = {
    "/login": None,  # a session, not a change of the account's things
    "/logout": None,
    "/vps/{vps_id}/slots/preview": None,  # a price preview changes nothing
    "/vps/{vps_id}/snapshots": ("snapshot.create", _create),
    "/vps/{vps_id}/snapshots/{name}/restore": ("snapshot.restore", _restore),
    "/vps/{vps_id}/snapshots/{name}/delete": ("snapshot.delete", _delete),
    "/vps/{vps_id}/power/{action}": ("vps.stop", _power),
    "/vps/{vps_id}/schedule": ("schedule.update", _schedule),
    "/vps/{vps_id}/slots": ("vps.config", _slots),
    "/keys": ("key.create", _key_create),
    "/keys/{key_id}/revoke": ("key.revoke", _key_revoke),
}


def panel_unsafe_routes(api: Api) -> set[str]:
    app = create_app(api.runtime.services, api.runtime.settings)
    install_pending(app)  # the panel is installed on its first request
    return {
        route.path
        for route in leaf_routes(app.router)
        if isinstance(route, Route)
        and not route.path.startswith("/api/")
        and (route.methods or set()) - {"GET", "HEAD", "OPTIONS"}
    }


async def test_every_panel_form_has_an_audit_case(api: Api) -> None:
    assert panel_unsafe_routes(api) == set(CASES)


@pytest.mark.parametrize("route", sorted(r for r, c in CASES.items() if c is not None))
async def test_a_panel_form_is_audited_with_the_user(api: Api, route: str) -> None:
    case = CASES[route]
    assert case is not None
    action, prepare = case
    async with panel_client(api, DEMO) as client:
        path, data = await prepare(api, client)
        token = await csrf_token(client)
        answer = await client.post(path, data={"csrf_token": token, **data}, headers=SAME_ORIGIN)
        assert answer.status_code in (200, 303), answer.text
        if answer.status_code == 200:
            assert not re.search(r'role="alert"', answer.text), answer.text
    user = next(u for u in await api.runtime.services.users.list("demo") if u.user.email == DEMO)
    page = await api.runtime.services.audit.list(AuditFilter(action=action), None, 10)
    assert page.items, action
    event = page.items[0]
    assert event.actor.kind.value == "user"
    assert event.actor.id == user.user.id
    assert event.outcome.value == "succeeded"
    assert event.client_ip == "127.0.0.1"
    assert event.request_id is not None and event.request_id.startswith("req_")
