"""`GET /api/jobs/{id}` with and without long-poll, and snapshots held busy by queued jobs."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import Api


@pytest.fixture
def api_worker() -> bool:
    return False  # jobs stay queued until a test runs them


async def create(api: Api, name: str = "held") -> str:
    response = await api.client.post(
        f"/api/v2/vps/{api.vps_ids['demo-web']}/snapshots", json={"name": name}, headers=api.auth()
    )
    assert response.status_code == 202
    job_id: str = response.json()["operation"]["jobId"]
    return job_id


async def test_plain_get_answers_at_once(api: Api) -> None:
    job_id = await create(api)
    response = await api.client.get(f"/api/jobs/{job_id}", headers=api.auth())
    assert response.status_code == 200
    assert "preference-applied" not in response.headers
    body = response.json()
    assert body["status"] == "queued"
    assert body["progress"] == 0
    assert body["startedAt"] is None
    assert body["finishedAt"] is None
    assert body["snapshotName"] == "held"


async def test_long_poll_times_out_with_the_unchanged_job(api: Api) -> None:
    job_id = await create(api)
    started = time.monotonic()
    response = await api.client.get(
        f"/api/jobs/{job_id}", headers={**api.auth(), "Prefer": "wait=1"}
    )
    elapsed = time.monotonic() - started
    assert response.headers["preference-applied"] == "wait=1"
    assert response.json()["status"] == "queued"
    assert 0.9 <= elapsed < 5


async def test_long_poll_answers_as_soon_as_the_status_changes(api: Api) -> None:
    job_id = await create(api)
    poll = asyncio.create_task(
        api.client.get(f"/api/jobs/{job_id}", headers={**api.auth(), "Prefer": "wait=30"})
    )
    await asyncio.sleep(0.2)
    assert not poll.done()
    started = time.monotonic()
    worker = api.runtime.worker()
    assert await worker.run_one()
    response = await asyncio.wait_for(poll, 10)
    assert time.monotonic() - started < 5
    assert response.json()["status"] in ("in_progress", "completed")
    final = await api.client.get(f"/api/jobs/{job_id}", headers={**api.auth(), "Prefer": "wait=30"})
    assert final.json()["status"] == "completed"


async def test_wait_is_capped_at_sixty_seconds(api: Api) -> None:
    job_id = await create(api)
    worker = api.runtime.worker()
    assert await worker.run_one()
    response = await api.client.get(
        f"/api/jobs/{job_id}", headers={**api.auth(), "Prefer": "wait=3600"}
    )
    # A finished job answers at once; the applied preference says what the server honours.
    assert response.headers["preference-applied"] == "wait=60"
    assert response.json()["status"] == "completed"


async def test_a_snapshot_being_created_is_busy(api: Api) -> None:
    await create(api, "busy")
    base = f"/api/v2/vps/{api.vps_ids['demo-web']}/snapshots/busy"
    for method, path in (("DELETE", base), ("POST", f"{base}/actions/restore")):
        response = await api.client.request(method, path, headers=api.auth())
        assert response.status_code == 409
        assert response.json()["code"] == "snapshot_busy"
    listing = await api.client.get(
        f"/api/v2/vps/{api.vps_ids['demo-web']}/snapshots", headers=api.auth()
    )
    assert [(s["name"], s["status"]) for s in listing.json()["data"]] == [("busy", "creating")]


async def test_a_snapshot_being_deleted_is_busy_and_frees_its_slot(api: Api) -> None:
    await create(api, "old")
    assert await api.runtime.worker().run_one()
    base = f"/api/v2/vps/{api.vps_ids['demo-web']}/snapshots"
    assert (await api.client.delete(f"{base}/old", headers=api.auth())).status_code == 202
    again = await api.client.delete(f"{base}/old", headers=api.auth())
    assert again.status_code == 409
    assert again.json()["code"] == "snapshot_busy"
    listing = (await api.client.get(base, headers=api.auth())).json()
    assert listing["data"][0]["status"] == "deleting"
    assert listing["limits"]["usedSnapshots"] == 0
