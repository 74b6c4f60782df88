"""``/api/v2/vps``: listing, filters, cursor pagination, ownership."""

from __future__ import annotations

import pytest

from tests.conftest import Api
from vpsnap.services.accounts import NewVps


async def test_lists_only_the_callers_vpses_with_the_contract_shape(api: Api) -> None:
    response = await api.client.get("/api/v2/vps", headers=api.auth())
    assert response.status_code == 200
    body = response.json()
    assert [v["name"] for v in body["data"]] == ["demo-web", "demo-db", "demo-nosnap"]
    assert body["hasMore"] is False
    assert body["nextCursor"] is None
    item = body["data"][0]
    assert set(item) == {
        "id",
        "name",
        "primaryIp",
        "serviceStatus",
        "powerState",
        "operatingSystem",
        "resources",
        "billing",
        "node",
        "createdAt",
    }
    assert item["id"].startswith("vps_")
    assert item["serviceStatus"] == "active"
    assert item["powerState"] == "stopped"
    assert set(item["resources"]) == {"cpuCores", "memoryGb", "storageGb"}
    assert set(item["billing"]) == {"amount", "currencyCode", "billingCycle", "isPayg"}
    assert set(item["operatingSystem"]) == {"displayName", "family", "version", "variant"}

    other = (await api.client.get("/api/v2/vps", headers=api.auth("other"))).json()
    assert [v["name"] for v in other["data"]] == ["other-web"]


async def test_get_one_and_cross_account_is_404(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    mine = await api.client.get(f"/api/v2/vps/{vps_id}", headers=api.auth())
    assert mine.status_code == 200
    assert mine.json()["name"] == "demo-web"
    theirs = await api.client.get(f"/api/v2/vps/{vps_id}", headers=api.auth("other"))
    unknown = await api.client.get("/api/v2/vps/vps_01hxa3b4c5d6e7f8g9h0j1k2m3", headers=api.auth())
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["code"] == unknown.json()["code"] == "vps_not_found"


async def test_filters_by_name_case_insensitively_and_by_primary_ip(api: Api) -> None:
    by_name = await api.client.get("/api/v2/vps", params={"name": "DEMO-DB"}, headers=api.auth())
    assert [v["name"] for v in by_name.json()["data"]] == ["demo-db"]
    by_ip = await api.client.get(
        "/api/v2/vps", params={"primaryIp": "203.0.113.12"}, headers=api.auth()
    )
    assert [v["name"] for v in by_ip.json()["data"]] == ["demo-nosnap"]
    # Another account's VPS is not found by its filters either.
    none = await api.client.get("/api/v2/vps", params={"name": "other-web"}, headers=api.auth())
    assert none.json()["data"] == []


async def test_cursor_pagination_walks_every_item_once(api: Api) -> None:
    for i in range(4):
        await api.runtime.services.accounts.add_vps(
            NewVps(account_name="demo", name=f"extra-{i}", disks=(), snapshot_slots=1)
        )
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = (await api.client.get("/api/v2/vps", params=params, headers=api.auth())).json()
        pages += 1
        seen.extend(v["name"] for v in body["data"])
        assert len(body["data"]) <= 2
        if not body["hasMore"]:
            assert body["nextCursor"] is None
            break
        cursor = body["nextCursor"]
    assert pages == 4
    assert seen == ["demo-web", "demo-db", "demo-nosnap"] + [f"extra-{i}" for i in range(4)]


@pytest.mark.parametrize("cursor", ["garbage!", "djE6", "aGVsbG8"])
async def test_a_bad_cursor_is_invalid_cursor(api: Api, cursor: str) -> None:
    response = await api.client.get("/api/v2/vps", params={"cursor": cursor}, headers=api.auth())
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"


@pytest.mark.parametrize("limit", ["0", "101", "-1"])
async def test_limit_out_of_range_points_at_the_query_parameter(api: Api, limit: str) -> None:
    response = await api.client.get("/api/v2/vps", params={"limit": limit}, headers=api.auth())
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["errors"] == [
        {"pointer": "/query/limit", "detail": body["errors"][0]["detail"], "code": "out_of_range"}
    ]


async def test_limit_of_the_wrong_type_is_invalid_type(api: Api) -> None:
    response = await api.client.get("/api/v2/vps", params={"limit": "ten"}, headers=api.auth())
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "invalid_type"
    assert response.json()["errors"][0]["pointer"] == "/query/limit"
