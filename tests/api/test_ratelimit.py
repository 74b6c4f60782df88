"""Rate limits (contract section 4): headers on every response, 429 with Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conftest import Api


@pytest.fixture
def api_overrides() -> dict[str, object]:
    return {
        "rate_limit_per_key": "5/minute",
        "rate_limit_per_ip": "5/minute",
        "rate_limit_snapshot_mutations_per_vps": "2/minute",
    }


async def test_every_response_carries_the_limit_headers(api: Api) -> None:
    for response, policy in (
        (await api.client.get("/api/v2/vps", headers=api.auth()), "per-key"),
        (await api.client.get("/api/v2/nowhere", headers=api.auth()), "per-key"),
        # Without a verified credential the budget is the client address's.
        (await api.client.get("/healthz"), "per-ip"),
        (await api.client.get("/api/v2/vps"), "per-ip"),
    ):
        headers = response.headers
        assert headers["x-ratelimit-limit"] == "5"
        assert int(headers["x-ratelimit-remaining"]) in range(5)
        reset = datetime.fromisoformat(headers["x-ratelimit-reset"].replace("Z", "+00:00"))
        assert 0 < (reset - datetime.now(UTC)).total_seconds() <= 61
        assert headers["ratelimit-policy"] == f'"{policy}";q=5;w=60'
        assert headers["ratelimit"].startswith(f'"{policy}";r=')


async def test_over_the_limit_is_429_with_retry_after(api: Api) -> None:
    remaining = [
        int(
            (await api.client.get("/api/v2/vps", headers=api.auth())).headers[
                "x-ratelimit-remaining"
            ]
        )
        for _ in range(5)
    ]
    assert remaining == [4, 3, 2, 1, 0]
    limited = await api.client.get("/api/v2/vps", headers=api.auth())
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    body = limited.json()
    assert body["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert body["extensions"]["retryAfter"] == int(limited.headers["retry-after"])
    # Counted per key: another key of the same account still gets through.
    assert (await api.client.get("/api/v2/vps", headers=api.auth("readonly"))).status_code == 200


async def test_unauthenticated_callers_are_counted_by_address(api: Api) -> None:
    statuses = [(await api.client.get("/api/v2/vps")).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]


async def test_snapshot_changes_are_limited_per_vps(api: Api) -> None:
    path = f"/api/v2/vps/{api.vps_ids['demo-web']}/snapshots"
    first = await api.client.post(path, json={"name": "a"}, headers=api.auth())
    second = await api.client.post(path, json={"name": "b"}, headers=api.auth())
    third = await api.client.post(path, json={"name": "c"}, headers=api.auth())
    assert [first.status_code, second.status_code, third.status_code] == [202, 202, 429]
    assert third.json()["code"] == "rate_limited"
    assert "this VPS" in third.json()["detail"]
    assert int(third.headers["retry-after"]) >= 1
    # Nothing was recorded for the refused call.
    listing = (await api.client.get(path, headers=api.auth())).json()
    assert sorted(s["name"] for s in listing["data"]) == ["a", "b"]
    # Another VPS has its own budget.
    other = f"/api/v2/vps/{api.vps_ids['demo-db']}/snapshots"
    assert (await api.client.post(other, json={"name": "x"}, headers=api.auth())).status_code == 202
