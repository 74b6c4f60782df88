"""Concurrent creates can never exceed a VPS's slots, and the database and the disk agree."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Api
from vpsnap.drivers.qemu_img import QemuImg

pytestmark = pytest.mark.qemu


async def test_twenty_simultaneous_creates_on_three_free_slots(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]  # 3 slots, none used
    path = f"/api/v2/vps/{vps_id}/snapshots"
    responses = await asyncio.gather(
        *(
            api.client.post(path, json={"name": f"race-{i:02d}"}, headers=api.auth())
            for i in range(20)
        )
    )
    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code != 202]
    assert len(accepted) == 3
    assert len(refused) == 17
    assert {r.status_code for r in refused} == {409}
    assert {r.json()["code"] for r in refused} == {"snapshot_limit_reached"}

    jobs = [await api.wait_job(r.json()["operation"]["jobId"]) for r in accepted]
    assert [j["status"] for j in jobs] == ["completed"] * 3
    accepted_names = sorted(r.json()["operation"]["result"]["name"] for r in accepted)

    listing = (await api.client.get(path, headers=api.auth())).json()
    assert sorted(s["name"] for s in listing["data"]) == accepted_names
    assert all(s["status"] == "available" for s in listing["data"])
    assert listing["limits"] == {"totalSnapshots": 3, "usedSnapshots": 3, "remainingSnapshots": 0}
    on_disk = sorted(s.name for s in (await QemuImg().info(api.disk("demo-web"))).snapshots)
    assert on_disk == accepted_names


async def test_simultaneous_creates_of_one_name_accept_exactly_one(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    path = f"/api/v2/vps/{vps_id}/snapshots"
    responses = await asyncio.gather(
        *(api.client.post(path, json={"name": "same"}, headers=api.auth()) for _ in range(8))
    )
    assert sorted(r.status_code for r in responses) == [202] + [409] * 7
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"snapshot_name_taken"}
