"""The snapshot workflow end to end through the real app, worker and qcow2 disks."""

from __future__ import annotations

import pytest

from tests.conftest import Api
from vpsnap.drivers.qemu_img import QemuImg

pytestmark = pytest.mark.qemu


async def test_create_list_restore_delete_rolls_the_disk_back(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    disk = api.disk("demo-web")
    qemu_img = QemuImg()
    # The demo wrote 0x5a at the start of the disk.
    assert await qemu_img.read_matches(disk, 0, 65536, 0x5A)

    created = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots",
        json={"name": "before-upgrade", "description": "Before package upgrade"},
        headers=api.auth(),
    )
    assert created.status_code == 202
    operation = created.json()["operation"]
    assert operation["status"] == "queued"
    assert operation["jobId"].startswith("job_")
    assert operation["pollUrl"] == f"/api/jobs/{operation['jobId']}"
    assert operation["result"] == {"name": "before-upgrade"}
    assert created.headers["location"] == operation["pollUrl"]

    job = await api.wait_job(operation["jobId"])
    assert job["status"] == "completed", job
    assert job["type"] == "snapshot.create"
    assert job["progress"] == 100
    assert job["vpsId"] == vps_id
    assert job["result"] == {"name": "before-upgrade"}
    assert job["error"] is None
    assert job["startedAt"] and job["finishedAt"]

    info = await qemu_img.info(disk)
    assert [s.name for s in info.snapshots] == ["before-upgrade"]

    listing = (await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())).json()
    assert listing["limits"] == {"totalSnapshots": 3, "usedSnapshots": 1, "remainingSnapshots": 2}
    [snapshot] = listing["data"]
    assert snapshot["name"] == snapshot["displayId"] == "before-upgrade"
    assert snapshot["description"] == "Before package upgrade"
    assert snapshot["status"] == "available"
    assert snapshot["origin"] == "manual"
    assert snapshot["consistency"] == "crash"
    assert snapshot["consistencyReason"] == (
        "the VM was not running: there was no RAM to save and no guest agent to ask"
    )
    assert snapshot["includesMemoryState"] is False
    assert snapshot["parentName"] is None
    assert snapshot["createdAt"].endswith("Z") and len(snapshot["createdAt"]) == 24

    # The "upgrade" goes wrong: the data changes.
    await qemu_img.write_pattern(disk, 0, 65536, 0x00)
    assert not await qemu_img.read_matches(disk, 0, 65536, 0x5A)

    restored = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots/before-upgrade/actions/restore", headers=api.auth()
    )
    assert restored.status_code == 202
    job = await api.wait_job(restored.json()["operation"]["jobId"])
    assert job["status"] == "completed", job
    assert job["type"] == "snapshot.restore"
    assert job["result"] == {
        "name": "before-upgrade",
        "powerStateBefore": "stopped",
        "powerStateAfter": "stopped",
    }
    assert await qemu_img.read_matches(disk, 0, 65536, 0x5A)

    # The restored snapshot is kept and becomes the parent of the next one.
    second = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "after-restore"}, headers=api.auth()
    )
    await api.wait_job(second.json()["operation"]["jobId"])
    listing = (await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())).json()
    assert [s["name"] for s in listing["data"]] == ["before-upgrade", "after-restore"]
    assert listing["data"][1]["parentName"] == "before-upgrade"

    deleted = await api.client.delete(
        f"/api/v2/vps/{vps_id}/snapshots/before-upgrade", headers=api.auth()
    )
    assert deleted.status_code == 202
    job = await api.wait_job(deleted.json()["operation"]["jobId"])
    assert job["status"] == "completed"
    assert job["type"] == "snapshot.delete"
    listing = (await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())).json()
    assert [s["name"] for s in listing["data"]] == ["after-restore"]
    assert [s.name for s in (await qemu_img.info(disk)).snapshots] == ["after-restore"]


async def test_names_keep_case_and_clash_case_insensitively(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    first = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "Before-Upgrade"}, headers=api.auth()
    )
    await api.wait_job(first.json()["operation"]["jobId"])
    clash = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "before-upgrade"}, headers=api.auth()
    )
    assert clash.status_code == 409
    assert clash.json()["code"] == "snapshot_name_taken"
    # Lookup by any case finds it; the disk keeps the name as given.
    restored = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots/BEFORE-UPGRADE/actions/restore", headers=api.auth()
    )
    assert restored.status_code == 202
    job = await api.wait_job(restored.json()["operation"]["jobId"])
    assert job["status"] == "completed", job
    info = await QemuImg().info(api.disk("demo-web"))
    assert [s.name for s in info.snapshots] == ["Before-Upgrade"]


async def test_a_failed_job_frees_its_slot_and_leaves_nothing_on_disk(api: Api) -> None:
    vps_id = api.vps_ids["demo-db"]  # one slot
    disk = api.disk("demo-db")
    # A snapshot vpsnap never made already carries the name on disk.
    await QemuImg().create_snapshot(disk, "foreign")
    created = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "foreign"}, headers=api.auth()
    )
    assert created.status_code == 202
    job = await api.wait_job(created.json()["operation"]["jobId"])
    assert job["status"] == "failed"
    error = job["error"]
    assert isinstance(error, dict)
    assert error["code"] == "snapshot_name_taken"
    assert error["status"] == 409
    assert error["type"].endswith("/errors/snapshot_name_taken")
    assert error["instance"] == f"/api/jobs/{job['jobId']}"
    listing = (await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())).json()
    assert listing["data"] == []
    assert listing["limits"]["usedSnapshots"] == 0
    # The foreign snapshot is untouched, and the slot can be used at once.
    assert [s.name for s in (await QemuImg().info(disk)).snapshots] == ["foreign"]
    again = await api.client.post(
        f"/api/v2/vps/{vps_id}/snapshots", json={"name": "mine"}, headers=api.auth()
    )
    assert again.status_code == 202
    assert (await api.wait_job(again.json()["operation"]["jobId"]))["status"] == "completed"


async def test_a_disk_in_use_fails_the_job_with_vps_not_ready(api: Api) -> None:
    import asyncio

    vps_id = api.vps_ids["demo-web"]
    holder = await asyncio.create_subprocess_exec(
        "qemu-io",
        str(api.disk("demo-web")),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(0.3)  # let qemu-io open the image and take its lock
        created = await api.client.post(
            f"/api/v2/vps/{vps_id}/snapshots", json={"name": "locked"}, headers=api.auth()
        )
        job = await api.wait_job(created.json()["operation"]["jobId"])
    finally:
        holder.kill()
        await holder.wait()
    assert job["status"] == "failed"
    assert isinstance(job["error"], dict)
    assert job["error"]["code"] == "vps_not_ready"
    listing = (await api.client.get(f"/api/v2/vps/{vps_id}/snapshots", headers=api.auth())).json()
    assert listing["data"] == []
    assert (await QemuImg().info(api.disk("demo-web"))).snapshots == ()


async def test_jobs_of_one_vps_run_in_arrival_order(api: Api) -> None:
    vps_id = api.vps_ids["demo-web"]
    jobs = []
    for name in ("one", "two", "three"):
        response = await api.client.post(
            f"/api/v2/vps/{vps_id}/snapshots", json={"name": name}, headers=api.auth()
        )
        assert response.status_code == 202
        jobs.append(response.json()["operation"])
    # Only the first can be queued; the others wait behind it.
    assert [j["status"] for j in jobs[1:]] == ["pending", "pending"]
    finished = [await api.wait_job(j["jobId"]) for j in jobs]
    assert all(j["status"] == "completed" for j in finished)
    starts = [j["startedAt"] for j in finished]
    ends = [j["finishedAt"] for j in finished]
    assert starts == sorted(starts)
    # Never concurrently: each starts after the one before it ended.
    assert all(ends[i] <= starts[i + 1] for i in range(2))
    info = await QemuImg().info(api.disk("demo-web"))
    assert [s.name for s in info.snapshots] == ["one", "two", "three"]
