"""Reconciliation on real qcow2 disks changed behind vpsnap's back, and `/metrics`."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import Api
from vpsnap.domain.model import JobStatus
from vpsnap.drivers.qemu_img import QemuImg
from vpsnap.scheduler.reconcile import Action, reconcile
from vpsnap.store.tables import write_intents

# Two passes that far apart confirm a snapshot is missing (the default waits a minute).
AT_ONCE = timedelta(0)

pytestmark = pytest.mark.qemu


async def snapshot(api: Api, vps: str, name: str) -> str:
    response = await api.client.post(
        f"/api/v2/vps/{api.vps_ids[vps]}/snapshots", json={"name": name}, headers=api.auth()
    )
    job = await api.wait_job(response.json()["operation"]["jobId"])
    assert job["status"] == "completed", job
    return str(job["jobId"])


async def listing(api: Api, vps: str) -> dict[str, object]:
    response = await api.client.get(f"/api/v2/vps/{api.vps_ids[vps]}/snapshots", headers=api.auth())
    body: dict[str, object] = response.json()
    return body


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # exposition order
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


async def test_a_snapshot_deleted_behind_vpsnaps_back_is_marked_and_frees_its_slot(
    api: Api,
) -> None:
    await snapshot(api, "demo-db", "gone")  # demo-db has one slot
    await QemuImg().delete_snapshot(api.disk("demo-db"), "gone")
    store, driver = api.runtime.store, api.runtime.driver

    # One observation is a suspicion, not a verdict: nothing changes yet.
    first = await reconcile(store, driver, None, confirm_after=AT_ONCE)
    assert [(f.action, f.snapshot) for f in first.findings] == [(Action.SUSPECTED_MISSING, "gone")]
    dry = await reconcile(store, driver, None, dry_run=True, confirm_after=AT_ONCE)
    assert [(f.action, f.snapshot) for f in dry.findings] == [(Action.MARKED_MISSING, "gone")]
    assert (await listing(api, "demo-db"))["limits"] == {
        "totalSnapshots": 1,
        "usedSnapshots": 1,
        "remainingSnapshots": 0,
    }
    before = metric(
        (await api.client.get("/metrics")).text,
        "vpsnap_reconciliation_actions_total",
        action="marked_missing",
    )

    report = await reconcile(store, driver, None, confirm_after=AT_ONCE)
    assert report.count(Action.MARKED_MISSING) == 1
    body = await listing(api, "demo-db")
    assert [(s["name"], s["status"]) for s in body["data"]] == [("gone", "failed")]  # type: ignore[attr-defined, index]
    assert body["limits"] == {"totalSnapshots": 1, "usedSnapshots": 0, "remainingSnapshots": 1}
    after = metric(
        (await api.client.get("/metrics")).text,
        "vpsnap_reconciliation_actions_total",
        action="marked_missing",
    )
    assert after == before + 1

    # A failed snapshot cannot be restored, but it can be deleted, and the slot is usable.
    restore = await api.client.post(
        f"/api/v2/vps/{api.vps_ids['demo-db']}/snapshots/gone/actions/restore", headers=api.auth()
    )
    assert restore.status_code == 404
    delete = await api.client.delete(
        f"/api/v2/vps/{api.vps_ids['demo-db']}/snapshots/gone", headers=api.auth()
    )
    assert (await api.wait_job(delete.json()["operation"]["jobId"]))["status"] == "completed"
    await snapshot(api, "demo-db", "fresh")
    assert (await reconcile(store, driver, None)).findings == []


async def test_a_snapshot_vpsnap_never_made_is_reported_and_left_alone(api: Api) -> None:
    await QemuImg().create_snapshot(api.disk("demo-web"), "operator-made")
    report = await reconcile(api.runtime.store, api.runtime.driver, None)
    assert [(f.action, f.vps_name, f.snapshot) for f in report.findings] == [
        (Action.REPORTED_FOREIGN, "demo-web", "operator-made")
    ]
    info = await QemuImg().info(api.disk("demo-web"))
    assert [s.name for s in info.snapshots] == ["operator-made"]
    assert (await listing(api, "demo-web"))["data"] == []


async def test_a_leftover_of_a_failed_vpsnap_job_is_removed(api: Api) -> None:
    job_id = await snapshot(api, "demo-web", "half-done")
    vps_id = api.vps_ids["demo-web"]
    # The state a create leaves when it failed after qemu-img wrote the snapshot and its
    # rollback could not remove it: the job failed, the row is gone, the disk still has it,
    # and the job's write intent is still open.
    async with api.runtime.store.transaction() as tx:
        job = await tx.get_job(job_id)
        assert job is not None
        await tx.update_job(dataclasses.replace(job, status=JobStatus.FAILED, result=None))
        await tx.remove_snapshot(vps_id, "half-done")
        await tx.set_current_snapshot(vps_id, None)
        await tx.conn.execute(  # type: ignore[attr-defined]
            write_intents.update()
            .where(write_intents.c.job_id == job_id)
            .values(state="open", closed_at=None)
        )

    dry = await reconcile(api.runtime.store, api.runtime.driver, None, dry_run=True)
    assert [(f.action, f.snapshot) for f in dry.findings] == [
        (Action.REMOVED_LEFTOVER, "half-done")
    ]
    assert [s.name for s in (await QemuImg().info(api.disk("demo-web"))).snapshots] == ["half-done"]

    await reconcile(api.runtime.store, api.runtime.driver, None)
    assert (await QemuImg().info(api.disk("demo-web"))).snapshots == ()
    async with api.runtime.store.transaction(read_only=True) as tx:
        assert await tx.open_write_intents(vps_id) == []


async def test_a_failed_create_of_a_taken_name_never_makes_the_owner_s_snapshot_a_leftover(
    api: Api,
) -> None:
    """Issue 9, kind 1: an operator's own `qemu-img snapshot -c clash`, then within a second
    a create of "clash" through the API. The job rightly fails snapshot_name_taken; the
    operator's snapshot must then survive every reconcile (it was deleted as a "leftover"
    because a failed create of that name ran within a second of it)."""
    disk = api.disk("demo-web")
    await QemuImg().create_snapshot(disk, "clash")
    response = await api.client.post(
        f"/api/v2/vps/{api.vps_ids['demo-web']}/snapshots",
        json={"name": "clash"},
        headers=api.auth(),
    )
    job = await api.wait_job(response.json()["operation"]["jobId"])
    assert job["status"] == "failed"
    assert job["error"]["code"] == "snapshot_name_taken"  # type: ignore[index]
    before = [(s.id, s.name, s.created_at) for s in (await QemuImg().info(disk)).snapshots]

    for _ in range(2):
        report = await reconcile(api.runtime.store, api.runtime.driver, None, confirm_after=AT_ONCE)
        assert [(f.action, f.snapshot) for f in report.findings] == [
            (Action.REPORTED_FOREIGN, "clash")
        ]
    after = [(s.id, s.name, s.created_at) for s in (await QemuImg().info(disk)).snapshots]
    assert after == before
    # No intent was ever recorded: the job failed before it was about to write.
    async with api.runtime.store.transaction(read_only=True) as tx:
        count = await tx.conn.execute(  # type: ignore[attr-defined]
            sa.select(sa.func.count()).select_from(write_intents)
        )
        assert count.scalar_one() == 0


def _overwrite(path: Path, offset: int, data: bytes) -> bytes:
    with path.open("r+b") as image:
        image.seek(offset)
        old = image.read(len(data))
        image.seek(offset)
        image.write(data)
    return old


async def test_an_unreadable_disk_is_reported_and_retried_never_a_verdict(api: Api) -> None:
    """Issue 9, kind 11b: create `good`; overwrite the qcow2 magic; reconcile (twice, even);
    restore the magic: `good` must still be available and restorable."""
    await snapshot(api, "demo-db", "good")
    disk = api.disk("demo-db")
    magic = _overwrite(disk, 0, b"XXXX")
    assert magic == b"QFI\xfb"
    try:
        for _ in range(2):
            report = await reconcile(
                api.runtime.store, api.runtime.driver, None, confirm_after=AT_ONCE
            )
            assert [(f.action, f.vps_name) for f in report.findings] == [
                (Action.UNREADABLE, "demo-db")
            ]
    finally:
        _overwrite(disk, 0, magic)
    assert [(s["name"], s["status"]) for s in (await listing(api, "demo-db"))["data"]] == [  # type: ignore[attr-defined]
        ("good", "available")
    ]
    response = await api.client.post(
        f"/api/v2/vps/{api.vps_ids['demo-db']}/snapshots/good/actions/restore", headers=api.auth()
    )
    assert (await api.wait_job(response.json()["operation"]["jobId"]))["status"] == "completed"


async def test_a_snapshot_that_reappears_is_available_again(api: Api) -> None:
    """A disk restored from a backup (or a mount that was briefly wrong) brings a snapshot back
    that reconciliation had marked failed: the same snapshot is available again."""
    await snapshot(api, "demo-db", "back")
    disk = api.disk("demo-db")
    saved = disk.read_bytes()
    await QemuImg().delete_snapshot(disk, "back")
    store, driver = api.runtime.store, api.runtime.driver
    await reconcile(store, driver, None, confirm_after=AT_ONCE)
    await reconcile(store, driver, None, confirm_after=AT_ONCE)
    assert [(s["name"], s["status"]) for s in (await listing(api, "demo-db"))["data"]] == [  # type: ignore[attr-defined]
        ("back", "failed")
    ]
    disk.write_bytes(saved)

    report = await reconcile(store, driver, None, confirm_after=AT_ONCE)
    assert [(f.action, f.snapshot) for f in report.findings] == [(Action.REAPPEARED, "back")]
    assert [(s["name"], s["status"]) for s in (await listing(api, "demo-db"))["data"]] == [  # type: ignore[attr-defined]
        ("back", "available")
    ]


async def test_a_different_snapshot_under_a_known_name_is_neither_restored_nor_deleted(
    api: Api,
) -> None:
    """Ownership by proof, not by name: someone deletes vpsnap's `mine` and makes their own
    `mine`. Restore refuses it, reconciliation reports it as foreign (and marks vpsnap's as
    missing), and deleting the row leaves the disk's snapshot alone."""
    await snapshot(api, "demo-db", "mine")
    disk = api.disk("demo-db")
    await QemuImg().delete_snapshot(disk, "mine")
    await QemuImg().create_snapshot(disk, "mine")
    theirs = [(s.id, s.created_at) for s in (await QemuImg().info(disk)).snapshots]
    vps = api.vps_ids["demo-db"]

    restore = await api.client.post(
        f"/api/v2/vps/{vps}/snapshots/mine/actions/restore", headers=api.auth()
    )
    job = await api.wait_job(restore.json()["operation"]["jobId"])
    assert (job["status"], job["error"]["code"]) == ("failed", "snapshot_not_found")  # type: ignore[index]

    report = await reconcile(api.runtime.store, api.runtime.driver, None, confirm_after=AT_ONCE)
    assert sorted((f.action, f.snapshot) for f in report.findings) == [
        (Action.REPORTED_FOREIGN, "mine"),
        (Action.SUSPECTED_MISSING, "mine"),
    ]
    delete = await api.client.delete(f"/api/v2/vps/{vps}/snapshots/mine", headers=api.auth())
    done = await api.wait_job(delete.json()["operation"]["jobId"])
    assert done["status"] == "completed"
    assert [(s.id, s.created_at) for s in (await QemuImg().info(disk)).snapshots] == theirs


async def test_agreement_means_no_findings_and_node_filter(api: Api) -> None:
    await snapshot(api, "demo-web", "fine")
    assert (await reconcile(api.runtime.store, api.runtime.driver, None)).findings == []
    assert (await reconcile(api.runtime.store, api.runtime.driver, "other-node")).findings == []


async def test_metrics_expose_requests_jobs_queue_and_snapshots(api: Api) -> None:
    await snapshot(api, "demo-web", "measured")
    await api.client.get("/api/v2/vps", headers=api.auth())
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        metric(
            text,
            "vpsnap_http_request_duration_seconds_count",
            method="GET",
            route="/api/v2/vps",
            status="200",
        )
        >= 1
    )
    assert (
        metric(
            text,
            "vpsnap_http_request_duration_seconds_count",
            method="POST",
            route="/api/v2/vps/{vps_id}/snapshots",
            status="202",
        )
        >= 1
    )
    assert (
        metric(
            text, "vpsnap_job_duration_seconds_count", outcome="completed", type="snapshot.create"
        )
        >= 1
    )
    assert metric(text, "vpsnap_jobs", status="completed") == 1
    assert metric(text, "vpsnap_jobs", status="queued") == 0
    assert metric(text, "vpsnap_snapshots", status="available") == 1
    assert "vpsnap_reconciliation_actions_total" in text or "vpsnap_reconciliation_actions" in text


async def test_answers_made_before_routing_are_labelled_with_their_route(api: Api) -> None:
    """An idempotent replay is answered before routing; it still counts under its route
    template, and only unknown paths count as ``unmatched``. (The registry is per process, so
    the test compares counts before and after.)"""
    path = f"/api/v2/vps/{api.vps_ids['demo-db']}/snapshots"
    template = "/api/v2/vps/{vps_id}/snapshots"
    count = "vpsnap_http_request_duration_seconds_count"

    async def counts() -> tuple[float, float, float]:
        text = (await api.client.get("/metrics")).text
        return (
            metric(text, count, route=template, method="POST", status="202"),
            metric(text, count, route="unmatched", method="POST", status="202"),
            metric(text, count, route="unmatched", method="GET", status="404"),
        )

    before = await counts()
    headers = {**api.auth(), "Idempotency-Key": "metrics-replay"}
    for _ in range(2):
        response = await api.client.post(path, headers=headers, json={"name": "replayed"})
        assert response.status_code == 202, response.text
    assert response.headers["idempotent-replayed"] == "true"
    await api.client.get("/no/such/thing", headers=api.auth())
    after = await counts()
    assert [b - a for a, b in zip(before, after, strict=True)] == [2, 0, 1]
