"""Reconciliation on real qcow2 disks changed behind vpsnap's back, and `/metrics`."""

from __future__ import annotations

import dataclasses
import re

import pytest

from tests.conftest import Api
from vpsnap.domain.model import JobStatus
from vpsnap.drivers.qemu_img import QemuImg
from vpsnap.scheduler.reconcile import Action, reconcile

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

    dry = await reconcile(store, driver, None, dry_run=True)
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

    report = await reconcile(store, driver, None)
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
    # rollback could not remove it: the job failed, the row is gone, the disk still has it.
    async with api.runtime.store.transaction() as tx:
        job = await tx.get_job(job_id)
        assert job is not None
        await tx.update_job(dataclasses.replace(job, status=JobStatus.FAILED, result=None))
        await tx.remove_snapshot(vps_id, "half-done")
        await tx.set_current_snapshot(vps_id, None)

    dry = await reconcile(api.runtime.store, api.runtime.driver, None, dry_run=True)
    assert [(f.action, f.snapshot) for f in dry.findings] == [
        (Action.REMOVED_LEFTOVER, "half-done")
    ]
    assert [s.name for s in (await QemuImg().info(api.disk("demo-web"))).snapshots] == ["half-done"]

    await reconcile(api.runtime.store, api.runtime.driver, None)
    assert (await QemuImg().info(api.disk("demo-web"))).snapshots == ()


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
