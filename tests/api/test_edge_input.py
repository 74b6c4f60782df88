"""Bad input is validated at the edge, never by the database (issue 9, kind 9): every id, filter
and cursor is checked against its documented shape, on SQLite and PostgreSQL alike.

A malformed id of a resource answers that resource's 404 (it cannot exist, and saying "bad
shape" would tell nothing more); a malformed filter or cursor answers 400. No input answers 5xx.
The walk covers every path and query parameter of every route of the app, so a new route is
covered without touching this file.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import httpx
from fastapi.routing import APIRoute

from tests.api.test_errors import assert_problem
from tests.conftest import Api
from vpsnap.api.edge import leaf_routes
from vpsnap.dashboard import install_pending

# Values nobody should be able to get a 5xx with. Each is sent percent-encoded (so it arrives
# as these characters), and the RAW ones also as written (already percent-encoded junk).
BAD_VALUES = [
    "a\x00b",
    "\x00",
    "x\x01\x1f\x7f",
    "x" * 5000,
    "é",
    "日本語",
    "\U0001f600",
    "\u202e\u200b",
    "..",
    "../../etc/passwd",
    " ",
    "a b",
    "'; DROP TABLE vps; --",
    "vps_" + "0" * 26 + "\x00",
    "VPS_01HXA3B4C5D6E7F8G9H0J1K2M3",
    "vps_01hxa3b4c5d6e7f8g9h0j1k2m",
    "job_01hxa3b4c5d6e7f8g9h0j1k2mu",
    "%",
    "\\",
]
RAW_VALUES = ["%ff%fe", "%c0%ae%c0%ae", "%25%00", "%E2%80%AE", "%2e%2e", "%u0000"]

# Resource path parameters and the 404 code a malformed value answers.
PATH_CODES = {
    "vps_id": "vps_not_found",
    "snapshot_id": "snapshot_not_found",
    "job_id": "job_not_found",
    "code": "not_found",
    "webhook_id": "webhook_not_found",
}
# Query parameters and the code of a malformed value.
QUERY_CODES = {
    "vpsId": "invalid_request",
    "status": "invalid_request",
    "name": "invalid_request",
    "primaryIp": "invalid_request",
    "limit": "invalid_request",
    "cursor": "invalid_cursor",
    # the audit trail's filters (issue 12)
    "actor": "invalid_request",
    "actorKind": "invalid_request",
    "action": "invalid_request",
    "since": "invalid_request",
    "until": "invalid_request",
}
VALID_BODIES: dict[str, dict[str, Any]] = {
    "createSnapshot": {"name": "edge"},
    "putSnapshotSchedule": {"enabled": False, "intervalHours": 6},
    "configureVps": {"resources": {"snapshotSlots": 3}, "dryRun": True},
}


def _all_routes(api: Api) -> list[APIRoute]:
    transport = api.client._transport
    assert isinstance(transport, httpx.ASGITransport)
    install_pending(transport.app)  # type: ignore[arg-type]  # the panel: on its first request
    return [r for r in leaf_routes(transport.app.router) if isinstance(r, APIRoute)]  # type: ignore[attr-defined]


def _app_routes(api: Api) -> list[APIRoute]:
    """The API's routes (problem+json answers); the panel's pages answer HTML (below)."""
    routes = [r for r in _all_routes(api) if r.path.startswith(("/api/", "/errors"))]
    assert len(routes) >= 20
    return routes


async def test_no_panel_path_parameter_makes_a_5xx(api: Api) -> None:
    """The panel's pages (HTML for people) take the same bad values without a 5xx: signed out
    they send to the sign-in page, never to the store."""
    panel = [r for r in _all_routes(api) if not r.path.startswith(("/api/", "/errors"))]
    tried = 0
    for route in panel:
        for name in [p.name for p in route.dependant.path_params]:
            for _raw, encoded in _encoded(BAD_VALUES):
                url = _url(
                    route, {p.name: "x" for p in route.dependant.path_params} | {name: encoded}
                )
                for method in sorted(route.methods):
                    response = await api.client.request(method, url)
                    assert response.status_code < 500, (method, route.path, response.text[:200])
                    tried += 1
    assert tried > 0


def _valid_path_values(api: Api, job_id: str) -> dict[str, str]:
    return {
        # demo-db: no VM, so a power action that got through could start nothing.
        "vps_id": api.vps_ids["demo-db"],
        "snapshot_id": "edge-snap",
        "job_id": job_id,
        "code": "vps_not_found",
        "webhook_id": "whk_01hxa3b4c5d6e7f8g9h0j1k2m3",
    }


def _encoded(values: list[str]) -> list[tuple[str, str]]:
    """(what it is, how it goes into a URL) for every bad value."""
    return [(v, quote(v, safe="")) for v in values] + [(v, v) for v in RAW_VALUES]


def _url(route: APIRoute, params: dict[str, str]) -> str:
    path = route.path
    for name, value in params.items():
        path = path.replace("{" + name + "}", value)
    return path


async def _request(
    api: Api, method: str, url: str, route: APIRoute, **kwargs: Any
) -> httpx.Response:
    headers = {**api.auth(), "Idempotency-Key": f"edge-{abs(hash((method, url)))}"}
    body = VALID_BODIES.get(route.operation_id or "")
    if method in {"POST", "PUT", "PATCH"}:
        kwargs.setdefault("json", body if body is not None else {})
    return await api.client.request(method, url, headers=headers, **kwargs)


async def _a_job(api: Api) -> str:
    created = await api.client.post(
        f"/api/v2/vps/{api.vps_ids['demo-web']}/snapshots",
        json={"name": "seed"},
        headers=api.auth(),
    )
    assert created.status_code == 202, created.text
    job_id: str = created.json()["operation"]["jobId"]
    return job_id


async def test_nul_in_ids_filters_and_cursors_is_a_4xx(api: Api) -> None:
    """The reproduction of issue 9, kind 9 (it answered 500 on PostgreSQL)."""
    auth = api.auth()
    assert_problem(await api.client.get("/api/v2/vps/a%00b", headers=auth), 404, "vps_not_found")
    assert_problem(await api.client.get("/api/jobs/x%00", headers=auth), 404, "job_not_found")
    body = assert_problem(
        await api.client.get("/api/v2/vps?name=a%00b", headers=auth), 400, "invalid_request"
    )
    assert [e["pointer"] for e in body["errors"]] == ["/query/name"]  # type: ignore[index]
    nul_cursor = base64.urlsafe_b64encode(b"v1:\x00").decode().rstrip("=")
    assert_problem(
        await api.client.get(f"/api/v2/vps?cursor={nul_cursor}", headers=auth),
        400,
        "invalid_cursor",
    )
    vps = api.vps_ids["demo-web"]
    assert_problem(
        await api.client.get(f"/api/v2/vps/{vps}/snapshots/a%00b", headers=auth),
        405,
        "method_not_allowed",
    )
    assert_problem(
        await api.client.delete(f"/api/v2/vps/{vps}/snapshots/a%00b", headers=auth),
        404,
        "snapshot_not_found",
    )
    body = assert_problem(
        await api.client.post(
            f"/api/v2/vps/{vps}/snapshots",
            json={"name": "a", "description": "x\x00y"},
            headers=auth,
        ),
        400,
        "invalid_request",
    )
    assert [e["pointer"] for e in body["errors"]] == ["/description"]  # type: ignore[index]


async def test_every_path_parameter_of_every_route_is_validated(api: Api) -> None:
    job_id = await _a_job(api)
    valid = _valid_path_values(api, job_id)
    tried = 0
    for route in _app_routes(api):
        names = [p.name for p in route.dependant.path_params]
        for name in names:
            assert name in PATH_CODES, f"{route.path}: path parameter {name} has no expected code"
            for raw, encoded in _encoded(BAD_VALUES):
                params = {**valid, name: encoded}
                url = _url(route, params)
                for method in sorted(route.methods):
                    response = await _request(api, method, url, route)
                    where = (method, route.path, name, raw[:40])
                    assert response.status_code < 500, (where, response.text)
                    # A value that decodes to `/`, or a dot segment (which the URL resolves),
                    # takes the request to another path: an unknown one, or the panel's home.
                    elsewhere = "/" in raw or raw in {".", ".."}
                    if elsewhere and response.is_redirect:
                        continue
                    assert response.headers.get("content-type") == "application/problem+json", (
                        where,
                        response.status_code,
                    )
                    code = response.json()["code"]
                    if elsewhere:
                        assert code in {PATH_CODES[name], "not_found", "method_not_allowed"}, where
                    else:
                        assert (response.status_code, code) == (404, PATH_CODES[name]), (
                            where,
                            response.text,
                        )
                    tried += 1
    assert tried > 300


async def test_every_query_parameter_of_every_route_is_validated(api: Api) -> None:
    tried = 0
    for route in _app_routes(api):
        if "{" in route.path:
            # Only the webhook deliveries take both (limit, cursor: tests/api/test_webhooks.py).
            continue
        for param in route.dependant.query_params:
            name = param.alias or param.name
            assert name in QUERY_CODES, f"{route.path}: query parameter {name} has no expected code"
            for raw, encoded in _encoded(BAD_VALUES):
                for method in sorted(route.methods):
                    response = await _request(api, method, f"{route.path}?{name}={encoded}", route)
                    where = (method, route.path, name, raw[:40])
                    assert response.status_code < 500, (where, response.text)
                    if response.status_code == 200:
                        # Only a name filter can take these (a printable name of ≤ 100
                        # characters), or an audit actor id (printable ASCII), and it matches
                        # nothing.
                        assert name in {"name", "actor"}, where
                        assert response.json()["data"] == [], where
                        continue
                    assert response.status_code == 400, (where, response.text)
                    assert response.json()["code"] == QUERY_CODES[name], (where, response.text)
                    tried += 1
    assert tried > 50


async def test_the_name_filter_takes_printable_text_up_to_100_characters(api: Api) -> None:
    auth = api.auth()
    for name, status in [
        ("demo-web", 200),
        ("DEMO-WEB", 200),
        ("é" * 100, 200),
        ("x" * 101, 400),
        ("a\tb", 400),
        ("a\u2028b", 200),  # a line separator is text, not a control character
        ("a\x85b", 400),
        ("", 400),
    ]:
        response = await api.client.get("/api/v2/vps", params={"name": name}, headers=auth)
        assert response.status_code == status, (name, response.text)
    listing = await api.client.get("/api/v2/vps", params={"name": "DEMO-web"}, headers=auth)
    assert [v["name"] for v in listing.json()["data"]] == ["demo-web"]


async def test_primary_ip_must_be_an_ip_address(api: Api) -> None:
    auth = api.auth()
    for value, status in [
        ("203.0.113.10", 200),
        ("2001:db8::1", 200),
        ("203.0.113.256", 400),
        ("localhost", 400),
        ("203.0.113.10/32", 400),
    ]:
        response = await api.client.get("/api/v2/vps", params={"primaryIp": value}, headers=auth)
        assert response.status_code == status, (value, response.text)
    listing = await api.client.get(
        "/api/v2/vps", params={"primaryIp": "203.0.113.10"}, headers=auth
    )
    assert [v["name"] for v in listing.json()["data"]] == ["demo-web"]


async def test_a_cursor_must_decode_to_a_vps_id(api: Api) -> None:
    auth = api.auth()

    def cursor(text: bytes) -> str:
        return base64.urlsafe_b64encode(text).decode().rstrip("=")

    for bad in [
        b"v1:",
        b"v1:x",
        b"v1:vps_" + b"0" * 25,
        b"v1:job_" + b"0" * 26,
        b"v2:vps_" + b"0" * 26,
        b"\xff\xfe",
    ]:
        response = await api.client.get("/api/v2/vps", params={"cursor": cursor(bad)}, headers=auth)
        assert_problem(response, 400, "invalid_cursor")
    first = await api.client.get("/api/v2/vps", params={"limit": 1}, headers=auth)
    next_cursor = first.json()["nextCursor"]
    assert next_cursor is not None
    second = await api.client.get(
        "/api/v2/vps", params={"limit": 1, "cursor": next_cursor}, headers=auth
    )
    assert second.status_code == 200
    assert second.json()["data"][0]["id"] > first.json()["data"][0]["id"]
