"""The hot read routes answered without FastAPI's dependency solving (``api.quick_routes``,
docs/performance.md "Reads, fourth round"): every request gets exactly the answer FastAPI's own
handler gives — the same status, headers and body, problems and their order included — and
plainly valid requests really take the quick path."""

from __future__ import annotations

from typing import Any

import fastapi.routing
import pytest

from tests.conftest import Api
from vpsnap.domain.auth import Scope

# Header values that differ between any two requests.
_PER_REQUEST = {"x-request-id", "date", "x-ratelimit-remaining", "x-ratelimit-reset", "ratelimit"}


def _paths(api: Api) -> list[str]:
    vps_id = api.vps_ids["web-1"] if "web-1" in api.vps_ids else next(iter(api.vps_ids.values()))
    missing = "vps_01hxa3b4c5d6e7f8g9h0j1k2m3"
    return [
        "/api/v2/vps",
        "/api/v2/vps?limit=1",
        "/api/v2/vps?limit=100",
        "/api/v2/vps?limit=2&cursor=bad",
        "/api/v2/vps?cursor=",
        "/api/v2/vps?limit=0",
        "/api/v2/vps?limit=101",
        "/api/v2/vps?limit=1000",
        "/api/v2/vps?limit=abc",
        "/api/v2/vps?limit=05",
        "/api/v2/vps?limit=%2B5",
        "/api/v2/vps?limit=%205",
        "/api/v2/vps?limit=5.0",
        "/api/v2/vps?limit=",
        "/api/v2/vps?limit=1&limit=3",
        "/api/v2/vps?limit=0&cursor=bad&name=",
        "/api/v2/vps?name=web-1",
        "/api/v2/vps?name=WEB-1&limit=1",
        "/api/v2/vps?primaryIp=10.0.0.1",
        "/api/v2/vps?primaryIp=" + "1" * 64,
        "/api/v2/vps?primaryIp=" + "1" * 65,
        "/api/v2/vps?primaryIp=%C3%A9",
        "/api/v2/vps?primary_ip=1",
        "/api/v2/vps?unknown=1",
        "/api/v2/vps?limit=2&unknown",
        f"/api/v2/vps/{vps_id}",
        f"/api/v2/vps/{vps_id}/snapshots",
        f"/api/v2/vps/{vps_id}/snapshots?limit=1",
        f"/api/v2/vps/{missing}",
        f"/api/v2/vps/{missing}/snapshots",
        f"/api/v2/vps/{vps_id.upper()}/snapshots",
        f"/api/v2/vps/{vps_id}%0A/snapshots",
        f"/api/v2/vps/{vps_id}x/snapshots",
        "/api/v2/vps/vps_bad/snapshots",
        "/api/v2/vps/vps_bad",
    ]


async def _answer(api: Api, path: str, headers: dict[str, str]) -> tuple[Any, ...]:
    response = await api.client.get(path, headers=headers)
    kept = sorted(
        (name, value) for name, value in response.headers.items() if name not in _PER_REQUEST
    )
    body: Any = response.content
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        body = {k: v for k, v in response.json().items() if k not in ("requestId", "timestamp")}
    return response.status_code, kept, body


async def test_every_answer_is_what_fastapis_handler_gives(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup_only = await api.runtime.services.credentials.issue("demo", frozenset({Scope.BACKUP_VM}))
    credentials = {
        "full": api.auth("full"),
        "readonly": api.auth("readonly"),
        "other account": api.auth("other"),
        "no read scope": {"Authorization": f"Bearer {backup_only.secret}"},
        "bad key": {"Authorization": "Bearer nope"},
        "none": {},
    }
    solved = 0
    solve = fastapi.routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal solved
        solved += 1
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    app: Any = api.client._transport.app  # type: ignore[attr-defined]
    quick = 0
    for path in _paths(api):
        for label, headers in credentials.items():
            solved = 0
            ours = await _answer(api, path, headers)
            took_quick = solved == 0
            # Any dependency override sends every request through FastAPI's handler.
            app.dependency_overrides[_unused] = _unused
            try:
                solved = 0
                theirs = await _answer(api, path, headers)
                assert solved == 1 or theirs[0] in (401,)  # the edge answers a bad key
            finally:
                app.dependency_overrides.clear()
            assert ours == theirs, (path, label)
            quick += took_quick and ours[0] == 200
    # The plain ones went the quick way (list, one VPS, snapshots; two keys at least).
    assert quick >= 10


def _unused() -> None:
    """A dependency no route declares (its override changes nothing but the handler)."""


async def test_a_plain_list_request_skips_dependency_solving(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("FastAPI solved dependencies")

    vps_id = next(iter(api.vps_ids.values()))
    monkeypatch.setattr(fastapi.routing, "solve_dependencies", refuse)
    for path in ("/api/v2/vps?limit=5", f"/api/v2/vps/{vps_id}/snapshots"):
        response = await api.client.get(path, headers=api.auth("full"))
        assert response.status_code == 200, response.text
