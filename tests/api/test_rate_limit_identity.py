"""Rate-limit identities (issue 9, kind 7): a credential that does not authenticate is no
identity. Such requests count against the client IP; the per-key budget (and the per-VPS one)
applies only after the key was verified, and nothing a caller makes up becomes a limiter key
or a cache entry."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.conftest import Api
from vpsnap.api.ratelimit import RateLimits
from vpsnap.store.sql import SqlTransaction

PER_KEY = 5
PER_IP = 8


@pytest.fixture
def api_overrides() -> dict[str, object]:
    return {
        "rate_limit_per_key": f"{PER_KEY}/minute",
        "rate_limit_per_ip": f"{PER_IP}/minute",
        "rate_limit_snapshot_mutations_per_vps": "3/minute",
    }


def bogus() -> dict[str, str]:
    return {"Authorization": f"Bearer vpsnap_bogus{secrets.token_hex(16)}"}


def rate_limits(api: Api) -> RateLimits:
    transport = api.client._transport
    assert isinstance(transport, httpx.ASGITransport)
    limits: RateLimits = transport.app.state.rate_limits  # type: ignore[attr-defined]
    return limits


def limiter_keys(api: Api) -> set[str]:
    """The counters the limiter keeps (in-memory storage): one per identity and window."""
    storage = rate_limits(api).counter.storage
    return set(storage.storage)  # type: ignore[attr-defined]


async def test_a_made_up_key_gets_no_budget_of_its_own(api: Api) -> None:
    """The reproduction: `Bearer vpsnap_bogus$RANDOM` got a fresh budget every time."""
    remaining = []
    for _ in range(PER_IP):
        response = await api.client.get("/api/v2/vps", headers=bogus())
        assert response.status_code == 401
        assert response.headers["ratelimit-policy"] == f'"per-ip";q={PER_IP};w=60'
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == list(range(PER_IP - 1, -1, -1))
    limited = await api.client.get("/api/v2/vps", headers=bogus())
    assert limited.status_code == 429
    assert limited.json()["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    # The other ways of presenting a made-up key, and none at all, share that budget.
    for headers in ({"X-API-Key": "vpsnap_" + secrets.token_hex(8)}, {}):
        assert (await api.client.get("/api/v2/vps", headers=headers)).status_code == 429


async def test_a_valid_key_is_counted_per_key(api: Api) -> None:
    statuses = [
        (await api.client.get("/api/v2/vps", headers=api.auth())).status_code
        for _ in range(PER_KEY + 1)
    ]
    assert statuses == [200] * PER_KEY + [429]
    limited = await api.client.get("/api/v2/vps", headers=api.auth())
    assert limited.headers["ratelimit-policy"] == f'"per-key";q={PER_KEY};w=60'
    # Another key of the same account has its own budget...
    assert (await api.client.get("/api/v2/vps", headers=api.auth("readonly"))).status_code == 200
    # ...and the requests of verified keys barely touch the address's budget: only checking a
    # key the server has not seen recently counts there (one per key here).
    anonymous = await api.client.get("/healthz")
    assert anonymous.headers["ratelimit-policy"] == f'"per-ip";q={PER_IP};w=60'
    assert int(anonymous.headers["x-ratelimit-remaining"]) == PER_IP - 3


async def test_a_spent_address_budget_stops_key_lookups(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = 0
    original = SqlTransaction.find_api_key_by_hash

    async def counting(self: SqlTransaction, secret_hash: str) -> object:
        nonlocal lookups
        lookups += 1
        return await original(self, secret_hash)

    monkeypatch.setattr(SqlTransaction, "find_api_key_by_hash", counting)
    for _ in range(PER_IP + 20):
        await api.client.get("/api/v2/vps", headers=bogus())
    # A flood of made-up keys costs at most one lookup per unit of the address's budget.
    assert lookups == PER_IP


async def test_made_up_keys_leave_no_counters_and_no_cache_entries(api: Api) -> None:
    await api.client.get("/healthz")  # the address's counter
    before = limiter_keys(api)
    cached = len(api.runtime.services.credentials._cache)
    for _ in range(PER_IP - 2):
        await api.client.get("/api/v2/vps", headers=bogus())
        await api.client.get("/healthz", headers={"X-API-Key": secrets.token_urlsafe(32)})
    assert limiter_keys(api) == before
    assert len(api.runtime.services.credentials._cache) == cached


async def test_the_per_vps_budget_is_keyed_on_verified_input(api: Api) -> None:
    vps = api.vps_ids["demo-web"]
    before = limiter_keys(api)
    # Unauthenticated, another account's key, a malformed id: no per-VPS counter is made.
    await api.client.post(f"/api/v2/vps/{vps}/snapshots", json={"name": "a"}, headers=bogus())
    await api.client.post("/api/v2/vps/not-an-id/snapshots", json={"name": "a"}, headers=api.auth())
    assert {k for k in limiter_keys(api) - before if "per-vps" in k} == set()
    statuses = [
        (
            await api.client.post(
                f"/api/v2/vps/{vps}/snapshots", json={"name": f"s{i}"}, headers=api.auth()
            )
        ).status_code
        for i in range(4)
    ]
    assert statuses == [202, 202, 202, 429]
    new = {k for k in limiter_keys(api) - before if "per-vps" in k}
    assert len(new) == 1
    account = api.runtime.services.accounts
    demo = await account.ensure_account("demo")
    assert f"{demo.id}:{vps}" in new.pop()
