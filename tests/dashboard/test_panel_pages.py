"""The panel's pages over ASGI (real app, store and qemu-img): what each role sees, the
gates in words, forms that take, watch and undo snapshots, 404 for another account's VPS on
every page, the live event stream, and no asset from another origin."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Route

from tests.conftest import Api
from vpsnap.api.app import create_app
from vpsnap.dashboard import install_pending
from vpsnap.domain.auth import Principal, Scope

from .support import SAME_ORIGIN, csrf_token, leaf_routes, panel_client

DEMO = "demo@example.com"
VIEWER = "viewer@example.com"
OTHER = "other@example.com"
_REQUEST_ID = re.compile(r"req_[0-9a-z]+")


def page_routes(api: Api) -> list[str]:
    app = create_app(api.runtime.services, api.runtime.settings)
    install_pending(app)  # the panel is installed on its first request
    return [
        r.path
        for r in leaf_routes(app.router)
        if isinstance(r, Route)
        and "GET" in (r.methods or set())
        and r.path.startswith("/vps/{vps_id}")
    ]


def fill(path: str, vps_id: str) -> str:
    values = {"vps_id": vps_id, "name": "nothing", "action": "stop"}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


async def test_pages_need_a_session(api: Api) -> None:
    async with panel_client(api) as client:
        answer = await client.get(f"/vps/{api.vps_ids['demo-web']}")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/login?next=/vps/{api.vps_ids['demo-web']}"


async def test_login_page_has_the_labelled_form(api: Api) -> None:
    async with panel_client(api) as client:
        page = await client.get("/login")
    assert page.status_code == 200
    assert '<label for="email">Email</label>' in page.text
    assert '<label for="password">Password</label>' in page.text
    assert ">Sign in</button>" in page.text


async def test_another_accounts_vps_is_the_same_404_as_a_missing_one_on_every_page(
    api: Api,
) -> None:
    routes = page_routes(api)
    assert len(routes) >= 8
    missing = "vps_01aaaaaaaaaaaaaaaaaaaaaaaa"
    async with panel_client(api, OTHER) as client:
        for path in routes:
            foreign = await client.get(fill(path, api.vps_ids["demo-web"]))
            absent = await client.get(fill(path, missing))
            assert foreign.status_code == absent.status_code == 404, path
            assert "Page not found" in foreign.text
            assert "demo-web" not in foreign.text
            assert _REQUEST_ID.sub("", foreign.text) == _REQUEST_ID.sub("", absent.text), path


async def test_unknown_panel_paths_get_a_page_and_api_clients_a_problem(api: Api) -> None:
    async with panel_client(api, DEMO) as client:
        page = await client.get("/no/such/page", headers={"Accept": "text/html"})
        problem = await client.get("/no/such/page", headers={"Accept": "application/json"})
        api_path = await client.get("/api/v2/nothing", headers={"Accept": "text/html"})
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "Page not found" in page.text
    assert problem.headers["content-type"] == "application/problem+json"
    assert api_path.headers["content-type"] == "application/problem+json"


async def test_viewer_sees_no_mutating_buttons(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    async with panel_client(api, DEMO) as owner:
        token = await csrf_token(owner)
        await owner.post(
            f"/vps/{vps_id}/snapshots",
            data={"csrf_token": token, "name": "kept"},
            headers=SAME_ORIGIN,
        )
    async with panel_client(api, VIEWER) as viewer:
        page = await viewer.get(f"/vps/{vps_id}")
        schedule = await viewer.get(f"/vps/{vps_id}/schedule")
        slots = await viewer.get(f"/vps/{vps_id}/slots")
        keys = await viewer.get("/keys")
    assert page.status_code == 200
    assert "kept" in page.text
    for text in ("Create snapshot</button>", ">Restore<", ">Delete<", "/power/", "Save schedule"):
        assert text not in page.text, text
    assert "Your role (viewer) can see snapshots but not take them." in page.text
    assert "Save schedule" not in schedule.text
    assert "Preview price" not in slots.text
    assert keys.status_code == 403
    assert 'href="/keys"' not in page.text


async def test_create_form_takes_a_snapshot_and_the_page_shows_it(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    async with panel_client(api, DEMO) as client:
        token = await csrf_token(client)
        answer = await client.post(
            f"/vps/{vps_id}/snapshots",
            data={"csrf_token": token, "name": "from-panel", "description": "Before upgrade"},
            headers=SAME_ORIGIN,
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/vps/{vps_id}?notice=create"
        events = await client.get(f"/vps/{vps_id}/events")
        page = await client.get(f"/vps/{vps_id}")

    # The stream reported the job until it ended, then said it is idle.
    assert events.headers["content-type"].startswith("text/event-stream")
    assert "event: job" in events.text
    assert '"status": "completed"' in events.text
    assert events.text.rstrip().endswith("data: {}")
    row = re.search(r'<tr data-snapshot="from-panel">(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert "Before upgrade" in row.group(1)
    assert 'status-available">available<' in row.group(1)
    assert "Slots: 1 of 3 used" in page.text


async def test_a_bad_name_is_explained_and_nothing_is_queued(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    async with panel_client(api, DEMO) as client:
        token = await csrf_token(client)
        answer = await client.post(
            f"/vps/{vps_id}/snapshots",
            data={"csrf_token": token, "name": "has space"},
            headers=SAME_ORIGIN,
        )
    assert answer.status_code == 400
    assert "This name cannot be used." in answer.text
    assert 'aria-invalid="true"' in answer.text
    listing = await api.runtime.services.snapshots.listing(await _owner(api), vps_id)
    assert listing.snapshots == []


async def _owner(api: Api) -> Principal:
    vps = await api.runtime.services.accounts.find_vps("demo", "demo-web")
    assert vps is not None
    return Principal(vps.account_id, frozenset({Scope.WRITE_ALL}))


async def test_full_slots_disable_create_with_the_reason_in_words(api: Api) -> None:
    vps_id = api.vps_ids["demo-db"]  # one slot
    async with panel_client(api, DEMO) as client:
        token = await csrf_token(client)
        await client.post(
            f"/vps/{vps_id}/snapshots",
            data={"csrf_token": token, "name": "only"},
            headers=SAME_ORIGIN,
        )
        page = await client.get(f"/vps/{vps_id}")
        nosnap = await client.get(f"/vps/{api.vps_ids['demo-nosnap']}")
    assert "The only slot is used: delete a snapshot or add a slot." in page.text
    assert re.search(r"<fieldset disabled>", page.text)
    assert 'aria-describedby="create-refusal"' in page.text
    assert "Snapshots are not included in this VPS&#39;s plan" in nosnap.text


async def test_more_slots_preview_then_confirm(api: Api) -> None:
    vps_id = api.vps_ids["demo-db"]
    async with panel_client(api, DEMO) as client:
        token = await csrf_token(client)
        options = await client.get(f"/vps/{vps_id}/slots")
        preview = await client.post(
            f"/vps/{vps_id}/slots/preview",
            data={"csrf_token": token, "slots": "2"},
            headers=SAME_ORIGIN,
        )
        unchanged = await api.runtime.services.panel.vps(await _owner(api), vps_id)
        confirm = await client.post(
            f"/vps/{vps_id}/slots", data={"csrf_token": token, "slots": "2"}, headers=SAME_ORIGIN
        )
        page = await client.get(confirm.headers["location"])
    assert "Preview price" in options.text
    assert preview.status_code == 200
    assert "Confirm 2 slots" in preview.text
    assert "1 → 2" in preview.text
    assert unchanged.snapshot_slots == 1  # the preview changed nothing
    assert confirm.status_code == 303
    assert "Snapshot slots changed." in page.text
    assert "Slots: 0 of 2 used" in page.text


async def test_owner_creates_and_revokes_an_api_key_shown_once(api: Api) -> None:
    async with panel_client(api, DEMO) as client:
        token = await csrf_token(client)
        created = await client.post(
            "/keys",
            data={"csrf_token": token, "scopes": ["read:vm", "backup:vm"], "expires_in_days": "30"},
            headers=SAME_ORIGIN,
        )
        secret = re.search(r'value="(vpsnap_[^"]+)"', created.text)
        assert secret is not None
        key_id = re.search(r"API key (key_[0-9a-z]+)", created.text)
        assert key_id is not None
        listed = await client.get("/keys")
        works = await api.client.get("/api/v2/vps", headers={"X-API-Key": secret.group(1)})
        revoke = await client.post(
            f"/keys/{key_id.group(1)}/revoke", data={"csrf_token": token}, headers=SAME_ORIGIN
        )
        api.runtime.services.credentials._cache.clear()
        after = await api.client.get("/api/v2/vps", headers={"X-API-Key": secret.group(1)})
    assert created.status_code == 200
    assert created.headers["cache-control"] == "no-store"
    assert secret.group(1) not in listed.text  # shown once
    assert key_id.group(1) in listed.text
    assert works.status_code == 200
    assert revoke.status_code == 303
    assert after.status_code == 401


async def test_an_owner_cannot_revoke_another_accounts_key(api: Api) -> None:
    foreign = await api.runtime.services.credentials.list_for_account(
        (await api.runtime.services.accounts.find_vps("other", "other-web")).account_id  # type: ignore[union-attr]
    )
    async with panel_client(api, DEMO) as client:
        token = await csrf_token(client)
        answer = await client.post(
            f"/keys/{foreign[0].id}/revoke", data={"csrf_token": token}, headers=SAME_ORIGIN
        )
    assert answer.status_code == 404
    assert (await api.client.get("/api/v2/vps", headers=api.auth("other"))).status_code == 200


async def test_schedule_form_saves_and_shows_the_next_run(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    async with panel_client(api, DEMO) as client:
        token = await csrf_token(client)
        saved = await client.post(
            f"/vps/{vps_id}/schedule",
            data={"csrf_token": token, "enabled": "on", "interval_hours": "6"},
            headers=SAME_ORIGIN,
        )
        page = await client.get(saved.headers["location"])
        overview = await client.get("/vps")
    assert "Schedule saved." in page.text
    assert "On, every 6 h" in page.text
    row = re.search(r"demo-web</a></th>(.*?)</tr>", overview.text, re.S)
    assert row is not None
    assert 'data-label="Schedule">on<' in row.group(1)


async def test_vps_list_filters_by_name(api: Api) -> None:
    async with panel_client(api, DEMO) as client:
        everything = await client.get("/vps")
        filtered = await client.get("/vps", params={"q": "DB"})
    assert all(n in everything.text for n in ("demo-web", "demo-db", "demo-nosnap"))
    assert "other-web" not in everything.text
    assert "demo-db" in filtered.text
    assert "demo-web</a>" not in filtered.text


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_api_docs_load_nothing_from_a_cdn(api: Api, path: str) -> None:
    page = await api.client.get(path, follow_redirects=True)
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page.text)
    assert urls
    assert all(not re.match(r"^(https?:)?//", u) for u in urls), urls
    for asset in [u for u in urls if u.startswith("/static/")]:
        assert (await api.client.get(asset)).status_code == 200, asset


async def test_no_panel_page_references_another_origin(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    async with panel_client(api) as anonymous:
        login = await anonymous.get("/login")
        assert not re.findall(r"""(?:src|href|action)="(?:https?:)?//""", login.text)
    paths = ["/vps", "/keys", *[fill(p, vps_id) for p in page_routes(api)]]
    async with panel_client(api, DEMO) as client:
        token = await csrf_token(client)
        await client.post(
            f"/vps/{vps_id}/snapshots",
            data={"csrf_token": token, "name": "ref"},
            headers=SAME_ORIGIN,
        )
        for path in [*paths, f"/vps/{vps_id}/snapshots/ref/restore"]:
            if path.endswith("/events"):
                continue
            page = await client.get(path)
            assert page.status_code in (200, 404), path
            assert "default-src 'self'" in page.headers["content-security-policy"]
            urls = re.findall(r"""(?:src|href|action)="([^"]+)\"""", page.text)
            assert all(not re.match(r"^(https?:)?//", u) for u in urls), (path, urls)


async def test_the_root_leads_to_the_panel(api: Api) -> None:
    """Issue 11's report: ``/`` was a 404 problem document."""
    async with panel_client(api) as anonymous, panel_client(api, DEMO) as client:
        root = await anonymous.get("/", follow_redirects=True)
        signed_in = await client.get("/", follow_redirects=True)
    assert root.status_code == 200
    assert str(root.url).endswith("/login?next=/vps")
    assert signed_in.status_code == 200
    assert "Your VPSes" in signed_in.text
