"""The ``hostup_session`` cookie on the API and the panel (issue 11, contract §2): cookie
attributes, role scopes on ``/api``, CSRF on every state-changing route, sign-in throttling,
one failure message, sign-out and disabled users. Real app, real store (SQLite and
PostgreSQL), real qemu-img."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.routing import Route

from tests.conftest import Api
from tests.support import PROBLEM_MEMBERS
from vpsnap.api.app import create_app
from vpsnap.dashboard import install_pending

from .support import (
    FOREIGN_ORIGIN,
    SAME_ORIGIN,
    csrf_token,
    job_count,
    leaf_routes,
    panel_client,
    password,
    sign_in,
)

DEMO = "demo@example.com"
VIEWER = "viewer@example.com"
OTHER = "other@example.com"


def snapshots_url(api: Api, vps: str = "demo-web") -> str:
    return f"/api/v2/vps/{api.vps_ids[vps]}/snapshots"


async def test_sign_in_sets_a_hardened_session_cookie(api: Api) -> None:
    async with panel_client(api) as client:
        answer = await sign_in(client, DEMO, password(api, DEMO))

    assert answer.status_code == 303
    assert answer.headers["location"] == "/vps"
    cookie = answer.headers["set-cookie"]
    name, _, rest = cookie.partition("=")
    value = rest.split(";", 1)[0]
    assert name == "hostup_session"
    assert len(value) >= 43  # 256 random bits, base64url
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path=/", "samesite=lax", "max-age=43200"} <= attributes
    assert "secure" not in attributes  # the public base URL is not https here


async def test_the_cookie_is_secure_when_the_public_url_is_https(api: Api) -> None:
    async with panel_client(api, public_base_url="https://panel.example") as client:
        answer = await client.post(
            "/login",
            data={"email": DEMO, "password": password(api, DEMO)},
            headers={"Origin": "https://panel.example"},
        )
    assert answer.status_code == 303
    assert "secure" in {p.strip().lower() for p in answer.headers["set-cookie"].split(";")}


async def test_the_cookie_authenticates_the_api_with_the_roles_scopes(api: Api) -> None:
    async with panel_client(api, VIEWER) as viewer, panel_client(api, DEMO) as owner:
        listed = await viewer.get("/api/v2/vps")
        refused = await viewer.post(
            snapshots_url(api), json={"name": "by-viewer"}, headers=SAME_ORIGIN
        )
        accepted = await owner.post(
            snapshots_url(api), json={"name": "by-owner"}, headers=SAME_ORIGIN
        )

    assert listed.status_code == 200
    assert {v["name"] for v in listed.json()["data"]} == {"demo-web", "demo-db", "demo-nosnap"}
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert refused.json()["extensions"]["requiredScopes"] == ["backup:vm"]
    assert accepted.status_code == 202
    job = await api.wait_job(accepted.json()["operation"]["jobId"])
    assert job["status"] == "completed"


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({}, False),  # neither Origin nor Sec-Fetch-Site: cannot tell it from a forgery
        (FOREIGN_ORIGIN, False),
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Sec-Fetch-Site": "same-site"}, False),
        ({**FOREIGN_ORIGIN, "Sec-Fetch-Site": "same-origin"}, False),
        ({"Origin": "null"}, False),
        (SAME_ORIGIN, True),
        ({"Sec-Fetch-Site": "same-origin"}, True),
    ],
)
async def test_api_changes_by_cookie_pass_the_csrf_check(
    api: Api, headers: dict[str, str], allowed: bool
) -> None:
    before = await job_count(api)
    async with panel_client(api, DEMO) as client:
        answer = await client.post(snapshots_url(api), json={"name": "csrf-probe"}, headers=headers)

    if allowed:
        assert answer.status_code == 202
        return
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body.keys() >= PROBLEM_MEMBERS
    assert body["code"] == "csrf_failed"
    assert body["type"].endswith("/errors/csrf_failed")
    assert await job_count(api) == before  # nothing was queued


async def test_the_csrf_token_header_also_passes_and_a_wrong_one_does_not(api: Api) -> None:
    async with panel_client(api, DEMO) as client:
        token = await csrf_token(client)
        good = await client.post(
            snapshots_url(api), json={"name": "with-token"}, headers={"X-CSRF-Token": token}
        )
        bad = await client.post(
            snapshots_url(api), json={"name": "bad-token"}, headers={"X-CSRF-Token": "x" * 43}
        )
    assert good.status_code == 202
    assert bad.status_code == 403
    assert bad.json()["code"] == "csrf_failed"


async def test_an_api_key_needs_no_origin(api: Api) -> None:
    answer = await api.client.post(
        snapshots_url(api), json={"name": "by-key"}, headers={**api.auth(), **FOREIGN_ORIGIN}
    )
    assert answer.status_code == 202


async def test_reads_by_cookie_need_no_csrf_proof(api: Api) -> None:
    async with panel_client(api, DEMO) as client:
        answer = await client.get(snapshots_url(api), headers=FOREIGN_ORIGIN)
    assert answer.status_code == 200


def _unsafe_routes(api: Api) -> list[tuple[str, str]]:
    app = create_app(api.runtime.services, api.runtime.settings)
    install_pending(app)  # the panel is installed on its first request
    found = []
    for route in leaf_routes(app.router):
        if not isinstance(route, Route):
            continue
        methods = sorted((route.methods or set()) - {"GET", "HEAD", "OPTIONS"})
        found.extend((method, route.path) for method in methods)
    return found


def _fill(path: str, api: Api) -> str:
    values = {
        "vps_id": api.vps_ids["demo-web"],
        "snapshot_id": "nothing",
        "name": "nothing",
        "key_id": "key_nothing",
        "action": "stop",
        "webhook_id": "whk_01hxa3b4c5d6e7f8g9h0j1k2m3",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


async def test_every_state_changing_route_refuses_a_cookie_from_a_foreign_origin(
    api: Api,
) -> None:
    """The invariant, for every unsafe route of the app (API and panel alike): a request
    authenticated by the cookie from another origin changes nothing and gets 403."""
    routes = _unsafe_routes(api)
    assert len(routes) > 20  # the walk really covers the app
    before = await job_count(api)
    async with panel_client(api, DEMO) as client:
        token = await csrf_token(client)
        for method, path in routes:
            url = _fill(path, api)
            headers = {**FOREIGN_ORIGIN, "Sec-Fetch-Site": "cross-site"}
            if path.startswith("/api/"):
                answer = await client.request(method, url, json={}, headers=headers)
                assert answer.status_code == 403, (method, path, answer.text)
                assert answer.json()["code"] == "csrf_failed", (method, path)
            else:
                answer = await client.request(
                    method, url, data={"csrf_token": token}, headers=headers
                )
                assert answer.status_code == 403, (method, path, answer.text)
                assert "Request refused" in answer.text, (method, path)
    assert await job_count(api) == before
    async with panel_client(api, DEMO) as client:  # the session itself is still fine
        assert (await client.get("/vps")).status_code == 200


async def test_every_panel_form_needs_the_session_token(api: Api) -> None:
    routes = [(m, p) for m, p in _unsafe_routes(api) if not p.startswith("/api/")]
    routes = [(m, p) for m, p in routes if p != "/login"]  # no session yet: Origin only
    assert routes
    async with panel_client(api, DEMO) as client, panel_client(api, VIEWER) as viewer:
        foreign_token = await csrf_token(viewer)  # a real token, of another session
        for method, path in routes:
            for data in ({}, {"csrf_token": foreign_token}):
                answer = await client.request(
                    method, _fill(path, api), data=data, headers=SAME_ORIGIN
                )
                assert answer.status_code == 403, (method, path, data)
                assert "Request refused" in answer.text


async def test_a_viewer_is_refused_every_change_in_the_panel(api: Api) -> None:
    """No buttons are shown to viewers, and the server refuses the forms anyway."""
    routes = [(m, p) for m, p in _unsafe_routes(api) if not p.startswith("/api/")]
    routes = [(m, p) for m, p in routes if p not in ("/login", "/logout")]
    before = await job_count(api)
    async with panel_client(api, VIEWER) as client:
        token = await csrf_token(client)
        for method, path in routes:
            answer = await client.request(
                method,
                _fill(path, api),
                data={"csrf_token": token, "name": "x", "slots": "5", "scopes": "read:vm"},
                headers=SAME_ORIGIN,
            )
            assert answer.status_code in (403, 404), (method, path, answer.status_code)
            if answer.status_code == 403:
                assert "Your role (viewer)" in answer.text or "Only an owner" in answer.text
    assert await job_count(api) == before


async def test_sign_in_failures_read_the_same_whether_the_address_exists(api: Api) -> None:
    async with panel_client(api) as client:
        wrong_password = await sign_in(client, DEMO, "not the password")
        unknown = await sign_in(client, "nobody@example.com", "not the password")

    def message(answer: httpx.Response) -> str:
        found = re.search(r'role="alert" id="login-error">([^<]+)<', answer.text)
        assert found is not None, answer.text
        return found.group(1)

    assert wrong_password.status_code == unknown.status_code == 200
    assert message(wrong_password) == message(unknown) == "The email or password is not right."
    assert "set-cookie" not in wrong_password.headers


async def test_repeated_bad_passwords_are_throttled_per_account(api: Api) -> None:
    async with panel_client(api, login_failures_per_account="3/minute") as client:
        for _ in range(3):
            assert (await sign_in(client, DEMO, "guess")).status_code == 200
        throttled = await sign_in(client, DEMO, password(api, DEMO))  # even the right one
        other = await sign_in(client, VIEWER, password(api, VIEWER))

    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert "Too many failed sign-in attempts" in throttled.text
    assert "set-cookie" not in throttled.headers
    assert other.status_code == 303  # another address is not held back


async def test_repeated_bad_passwords_are_throttled_per_ip(api: Api) -> None:
    async with panel_client(api, login_failures_per_ip="4/minute") as client:
        for index in range(4):
            await sign_in(client, f"guess{index}@example.com", "guess")
        throttled = await sign_in(client, VIEWER, password(api, VIEWER))
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) >= 1


async def test_unknown_addresses_are_throttled_like_known_ones(api: Api) -> None:
    async with panel_client(api, login_failures_per_account="2/minute") as client:
        for _ in range(2):
            await sign_in(client, "nobody@example.com", "guess")
        throttled = await sign_in(client, "nobody@example.com", "guess")
    assert throttled.status_code == 429


async def test_sign_in_from_a_foreign_origin_is_refused(api: Api) -> None:
    async with panel_client(api) as client:
        answer = await client.post(
            "/login", data={"email": DEMO, "password": password(api, DEMO)}, headers=FOREIGN_ORIGIN
        )
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers


async def test_sign_out_ends_the_session_everywhere(api: Api) -> None:
    async with panel_client(api, DEMO) as client:
        cookie = client.cookies["hostup_session"]
        token = await csrf_token(client)
        out = await client.post("/logout", data={"csrf_token": token}, headers=SAME_ORIGIN)
        assert out.status_code == 303
        assert 'hostup_session=""' in out.headers["set-cookie"]
    async with panel_client(api) as client:
        client.cookies.set("hostup_session", cookie)
        api_answer = await client.get("/api/v2/vps")
        page = await client.get("/vps")
    assert api_answer.status_code == 401
    assert page.status_code == 303
    assert page.headers["location"].startswith("/login?next=/vps&ended=1")


async def test_a_disabled_user_is_signed_out_at_once(api: Api) -> None:
    async with panel_client(api, VIEWER) as client:
        assert (await client.get("/api/v2/vps")).status_code == 200
        await api.runtime.services.users.disable(VIEWER)
        assert (await client.get("/api/v2/vps")).status_code == 401
        assert (await client.get("/vps")).status_code == 303
        again = await sign_in(client, VIEWER, password(api, VIEWER))
        assert "set-cookie" not in again.headers


async def test_sign_in_rotates_the_session_cookie(api: Api) -> None:
    async with panel_client(api, DEMO) as client:
        first = client.cookies["hostup_session"]
        await sign_in(client, DEMO, password(api, DEMO))
        second = client.cookies["hostup_session"]
        assert second != first
        assert (await client.get("/api/v2/vps")).status_code == 200
    async with panel_client(api) as stale:
        stale.cookies.set("hostup_session", first)
        assert (await stale.get("/api/v2/vps")).status_code == 401
